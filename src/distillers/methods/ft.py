"""FT: Kim, Park, Kwak, "Paraphrasing Complex Network: Network Compression via Factor Transfer", NeurIPS 2018,
arXiv 1802.04977.

Init stage: a paraphraser (conv auto-encoder) learns to reconstruct the teacher's last feature map. Main stage: a
translator maps the student's map to a "factor" that must match the frozen paraphraser's encoding of the teacher's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import attention_map, pool

# Students whose init stage runs at lr 0.01 in RepDistiller (helper/pretrain.py lists exactly these 13 models).
_SMALL_INIT_LR_PREFIXES = ("resnet", "wrn_")


def _conv_stack(channels: Sequence[tuple[int, int]], transposed: bool, use_bn: bool) -> nn.Sequential:
    """Three conv3x3 -> [BN] -> LeakyReLU(0.1) blocks; without BN an empty placeholder keeps RepDistiller's indices."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in channels:
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if use_bn else nn.Identity(),
                   nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """Auto-encoder of the teacher's map: ``C_t -> C_t -> C' -> C'`` and back (``C' = int(C_t * k)``), no BN."""

    def __init__(self, t_channels: int, k: float = 0.5) -> None:
        super().__init__()
        factor = int(t_channels * k)
        self.encoder = _conv_stack([(t_channels, t_channels), (t_channels, factor), (factor, factor)], False, False)
        self.decoder = _conv_stack([(factor, factor), (factor, t_channels), (t_channels, t_channels)], True, False)

    def forward(self, feat_t: Tensor) -> Tensor:
        """The reconstruction (note the reference's final LeakyReLU on it)."""
        return self.decoder(self.encoder(feat_t))


class Translator(nn.Module):
    """Student-side encoder ``C_s -> C_s -> C' -> C'`` with BatchNorm."""

    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5) -> None:
        super().__init__()
        factor = int(t_channels * k)
        self.encoder = _conv_stack([(s_channels, s_channels), (s_channels, factor), (factor, factor)], False, True)

    def forward(self, feat_s: Tensor) -> Tensor:
        return self.encoder(feat_s)


def factor_transfer_loss(factor_s: Tensor, factor_t: Tensor, p1: float = 2, p2: float = 1) -> Tensor:
    """Distance between the normalised spatial maps of two factors (pooled to the same size first)."""
    factor_s, factor_t = pool(factor_s, factor_t)
    diff = attention_map(factor_s, p1) - attention_map(factor_t, p1)
    return diff.abs().mean() if p2 == 1 else diff.pow(p2).mean()


@METHODS.register("ft", "factor")
class FT(Method):
    """Factor transfer (RepDistiller ``factor``) on ``feats[-2]``.

    Kept reference quirks: the paraphraser's reconstruction ends with a LeakyReLU; after init the paraphraser is in
    eval mode and frozen (only the translator joins the main optimiser); the init stage runs at lr 0.01 for
    resnet*/wrn_* students (``init_lr``), at the usual learning rate otherwise.
    """

    name = "ft"
    display_name = "FT"
    table_rank = 100
    paper = ("Paraphrasing Complex Network: Network Compression via Factor Transfer "
             "(Kim et al., NeurIPS 2018, arXiv 1802.04977)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=200.0)
    init_stage = True

    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5, p1: float = 2, p2: float = 1) -> None:
        super().__init__()
        self.translator = Translator(s_channels, t_channels, k)
        self.paraphraser = Paraphraser(t_channels, k)
        self.p1, self.p2 = p1, p2
        self._init_done = False

    @classmethod
    def build(cls, pair: Pair) -> FT:
        flat = [role for role, shape in (("student", pair.student_shapes[-2]), ("teacher", pair.teacher_shapes[-2]))
                if len(shape) == 3 and shape[1] * shape[2] == 1]
        if flat:  # a factor is compared as a normalised spatial map: over one position it is the constant 1
            raise unsupported(cls.name, pair, f"the {' and '.join(flat)}'s last feature map is 1x1 at "
                                              f"{pair.input_size} px, where factors carry nothing; use a larger "
                                              f"--input-size")
        return cls(pair.student_shapes[-2][0], pair.teacher_shapes[-2][0])

    @staticmethod
    def init_lr(student_name: str, default_lr: float) -> float:
        """Learning rate of the init stage: 0.01 for resnet*/wrn_* students (not ResNet50), else ``default_lr``."""
        return 0.01 if student_name.startswith(_SMALL_INIT_LR_PREFIXES) else default_lr

    def reconstruction_loss(self, feat_t: Tensor) -> Tensor:
        """Init-stage loss: MSE between the paraphraser's reconstruction and the teacher's map."""
        return F.mse_loss(self.paraphraser(feat_t), feat_t)

    def loss(self, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        """Main-stage loss between the translated student map and the paraphrased teacher map."""
        return factor_transfer_loss(self.translator(feat_s), self.paraphraser.encoder(feat_t), self.p1, self.p2)

    def init_loss(self, step: Step) -> Tensor:
        return self.reconstruction_loss(step.feats_t[-2])

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-2], step.feats_t[-2])

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [self.paraphraser]

    def end_init_stage(self) -> None:
        self._init_done = True
        self.paraphraser.requires_grad_(False)
        self.paraphraser.eval()

    def main_parameters(self) -> Iterable[nn.Parameter]:
        return self.translator.parameters()

    def train(self, mode: bool = True) -> FT:
        super().train(mode)
        if self._init_done:  # the frozen paraphraser stays in eval mode whatever the engine asks
            self.paraphraser.eval()
        return self
