"""Behaviour of the modern methods beyond the fixture values: per-pair defaults, unsupported pairs, warm-ups, options,
logit-standardisation properties and the wiring contracts (strong view, teacher pre-activation features).

Pairs are built from stand-in models that expose only the declared zoo interface (``feature_info``,
``get_bn_before_relu``) read from ``shared/reference/models.json``, so these tests do not depend on the zoo and
stay fast.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Step
from distillers.methods.dkd import DKD, DKDLS, dkd_loss
from distillers.methods.logit_standardization import KDLS, kd_ls_loss, standardize
from distillers.methods.mlkd import MLKD, MLKDLS, confidence_fractions
from distillers.methods.ofd import OFD, ofd_margins
from distillers.methods.reviewkd import ReviewKD
from distillers.models.base import FeatureInfo

MODERN = ("dkd", "dkd_ls", "kd_ls", "reviewkd", "ofd", "dist", "mlkd", "mlkd_ls")

# The seed's 13 teacher -> student pairs with mdistiller's DKD beta (README_modern; unlisted pairs: cfg default 8).
SEED_PAIRS_DKD_BETA = {
    ("wrn_40_2", "wrn_16_2"): 6.0, ("wrn_40_2", "wrn_40_1"): 6.0, ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet20"): 8.0, ("resnet110", "resnet32"): 2.0, ("resnet32x4", "resnet8x4"): 8.0,
    ("vgg13", "vgg8"): 6.0, ("vgg13", "MobileNetV2"): 6.0, ("ResNet50", "MobileNetV2"): 8.0,
    ("ResNet50", "vgg8"): 8.0, ("resnet32x4", "ShuffleV1"): 8.0, ("resnet32x4", "ShuffleV2"): 8.0,
    ("wrn_40_2", "ShuffleV1"): 8.0,
}
SEED_PAIRS = list(SEED_PAIRS_DKD_BETA)


class MetadataModel(nn.Module):
    """A zoo model's declared interface only: feature metadata and the BN-before-ReLU layers (models.json)."""

    def __init__(self, entry: dict) -> None:
        super().__init__()
        input_side = 32  # models.json records the shapes of a 32x32 input
        self.feature_info = [FeatureInfo(shape[1], None if len(shape) == 2 else input_side // shape[2])
                             for shape in entry["feat_shapes"]]
        bn = entry["bn_before_relu"]
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in bn["channels"]) if bn["supported"] else None

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        if self.bns is None:
            raise NotImplementedError("no BN before ReLU")
        return list(self.bns)


@pytest.fixture(scope="module")
def make_pair(models_reference: dict):
    def make(teacher: str, student: str, input_size: int = 32, **extra) -> Pair:
        models = models_reference["models"]
        return Pair(student=MetadataModel(models[student]), teacher=MetadataModel(models[teacher]),
                    student_name=student, teacher_name=teacher, input_size=input_size,
                    options=MethodOptions(extra=extra))

    return make


@pytest.fixture
def on_meta():
    """Create tensors and modules on the meta device: shapes only, no initialisation or compute (fast)."""
    with torch.device("meta"):
        yield


def _logits(batch: int = 6, classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(batch, classes, generator=gen), 3 * torch.randn(batch, classes, generator=gen),
            torch.randint(classes, (batch,), generator=gen))


@pytest.mark.parametrize("name", MODERN)
def test_registered_with_paper_and_weights(name: str) -> None:
    cls = METHODS.get(name)
    assert cls.name == name
    assert "CVPR" in cls.paper or "ICCV" in cls.paper or "NeurIPS" in cls.paper
    assert "arXiv" in cls.paper or name == "mlkd"  # MLKD has no arXiv version
    assert cls.weights.alpha == 0 and cls.weights.beta == 1 and cls.weights.gamma > 0
    assert cls.weights_note
    assert cls.protocol == ("mlkd-strong" if name.startswith("mlkd") else "crd")


@pytest.mark.parametrize("pair_names", SEED_PAIRS, ids="->".join)
def test_dkd_beta_per_pair(pair_names: tuple[str, str], make_pair) -> None:
    method = DKD.build(make_pair(*pair_names))
    assert (method.alpha, method.beta, method.T, method.warmup) == (1.0, SEED_PAIRS_DKD_BETA[pair_names], 4.0, 20)


def test_dkd_options_and_ls_defaults(make_pair) -> None:
    method = DKD.build(make_pair("resnet56", "resnet20", beta="3", T=2, warmup=5, alpha=0.5))
    assert (method.alpha, method.beta, method.T, method.warmup) == (0.5, 3.0, 2.0, 5)
    ls = DKDLS.build(make_pair("resnet32x4", "resnet8x4"))
    assert (ls.alpha, ls.beta, ls.T, ls.warmup, ls.logit_stand) == (9.0, 72.0, 2.0, 20, True)
    ls = DKDLS.build(make_pair("resnet56", "resnet20", base_temp=3, kd_weight=2))
    assert (ls.alpha, ls.beta, ls.T) == (2.0, 4.0, 3.0)
    assert DKDLS.weights.gamma == 1.0 and KDLS.weights.gamma == 0.1
    kd = KDLS.build(make_pair("vgg13", "vgg8", base_temp=3))
    assert (kd.T, kd.kd_weight) == (3.0, 9.0)
    mlkd, mlkd_ls = MLKD.build(make_pair("vgg13", "vgg8")), MLKDLS.build(make_pair("vgg13", "vgg8"))
    assert (mlkd.T, mlkd.kd_weight, mlkd.ce_weight) == (4.0, 0.9, 0.1)
    assert (mlkd_ls.T, mlkd_ls.kd_weight, mlkd_ls.ce_weight, mlkd_ls.logit_stand) == (2.0, 9.0, 0.1, True)


@pytest.mark.parametrize("epoch", [1, 10, 20, 240])
def test_dkd_warmup(epoch: int) -> None:
    logits_s, logits_t, target = _logits()
    method = DKD(alpha=1.0, beta=8.0, T=4.0, warmup=20)
    out = method(Step(feats_s=[], feats_t=[], logits_s=logits_s, logits_t=logits_t, target=target, epoch=epoch))
    full, _, _ = dkd_loss(logits_s, logits_t, target, 1.0, 8.0, 4.0)
    factor = {1: 1 / 20, 10: 0.5, 20: 1.0, 240: 1.0}[epoch]
    torch.testing.assert_close(sum(out.values()), factor * full)


@pytest.mark.parametrize("epoch", [1, 20])
def test_reviewkd_warmup(epoch: int) -> None:
    torch.manual_seed(0)
    method = ReviewKD([4, 6, 6], [3, 5, 5], reviewkd_weight=2.0, warmup=20)
    feats_s = [torch.rand(2, 4, 4, 4), torch.rand(2, 6, 2, 2)]
    preact_t = [torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    pooled_s, pooled_t = torch.rand(2, 6), torch.randn(2, 5)
    step = Step(feats_s=[None, *feats_s, pooled_s], feats_t=[None, *preact_t, pooled_t], logits_s=torch.zeros(2, 3),
                logits_t=torch.zeros(2, 3), target=torch.zeros(2, dtype=torch.long), epoch=epoch)
    # Same BN state for both calls: the module is in eval mode here (train mode would update running stats).
    method.eval()
    full = method.loss(feats_s, pooled_s, preact_t, pooled_t)
    torch.testing.assert_close(method(step)["reviewkd"], 2.0 * min(epoch / 20, 1.0) * full)


@pytest.mark.parametrize("pair_names", SEED_PAIRS, ids="->".join)
@pytest.mark.parametrize("name", ["reviewkd", "ofd"])
def test_feature_methods_support_every_seed_pair(name: str, pair_names: tuple[str, str], make_pair,
                                                 on_meta: None) -> None:
    """Build from metadata and run one step with the pair's feature shapes (meta tensors: shapes only)."""
    pair = make_pair(*pair_names, input_size=8)  # maps down to 1x1 (ResNet50's last stage)
    method = METHODS.get(name).build(pair).to("meta")  # .to moves OFD's margins, derived from the teacher's BNs
    feats_s = [torch.empty(2, *shape, requires_grad=True) for shape in pair.student_shapes]
    feats_t = [torch.empty(2, *shape) for shape in pair.teacher_shapes]
    step = Step(feats_s=feats_s, feats_t=feats_t, logits_s=torch.empty(2, 100), logits_t=torch.empty(2, 100),
                target=torch.zeros(2, dtype=torch.long), epoch=20)
    loss = sum(method(step).values())
    loss.backward()
    assert loss.shape == ()
    assert all(f.grad is not None for f in feats_s[1:-1])  # every student stage is used


def test_reviewkd_channels_from_metadata(make_pair, on_meta: None) -> None:
    """The derived lists equal the official ReviewKD per-student lists (README_modern)."""
    def channels(method: ReviewKD) -> tuple[list[int], list[int], int]:
        levels = list(reversed(method.abfs))  # stored deepest first
        return ([abf.conv1[0].in_channels for abf in levels], [abf.conv2[0].out_channels for abf in levels],
                levels[0].conv1[0].out_channels)

    assert channels(ReviewKD.build(make_pair("wrn_40_2", "ShuffleV1"))) == \
        ([240, 480, 960, 960], [32, 64, 128, 128], 512)
    assert channels(ReviewKD.build(make_pair("resnet32x4", "ShuffleV2"))) == \
        ([116, 232, 464, 1024], [64, 128, 256, 256], 512)
    assert channels(ReviewKD.build(make_pair("resnet56", "resnet20"))) == ([16, 32, 64, 64], [16, 32, 64, 64], 64)
    assert channels(ReviewKD.build(make_pair("wrn_40_2", "wrn_16_2")))[:2] == ([32, 64, 128, 128], [32, 64, 128, 128])
    assert ReviewKD.build(make_pair("resnet32x4", "ShuffleV2")).reviewkd_weight == 8.0
    assert ReviewKD.build(make_pair("resnet56", "resnet20")).reviewkd_weight == 0.6
    assert ReviewKD.build(make_pair("vgg13", "vgg8")).reviewkd_weight == 1.0
    assert ReviewKD.build(make_pair("vgg13", "vgg8", reviewkd_weight=3, warmup=1)).reviewkd_weight == 3.0
    assert [abf.att_conv is None for abf in ReviewKD.build(make_pair("resnet56", "resnet20")).abfs] == \
        [True, False, False, False]


@pytest.mark.parametrize("name, teacher, student, why", [
    ("reviewkd", "resnet32x4", "vgg8", "teacher has 3 and the student 4"),
    ("reviewkd", "ResNet50", "resnet20", "teacher has 4 and the student 3"),
    ("ofd", "vgg13", "resnet8x4", "teacher has 4 and the student 3"),
    ("ofd", "ShuffleV1", "resnet8x4", "no BN-before-ReLU"),
    ("ofd", "ShuffleV2", "wrn_16_2", "no BN-before-ReLU"),
])
def test_unsupported_pairs(name: str, teacher: str, student: str, why: str, make_pair) -> None:
    with pytest.raises(UserError, match=f"method '{name}' does not support {teacher} -> {student}: .*{why}"):
        METHODS.get(name).build(make_pair(teacher, student))


def test_ofd_margins_and_teacher_mode(make_pair) -> None:
    weight = torch.tensor([1.0, -2.0, 0.5])
    bias = torch.tensor([0.0, 0.0, 2.0])  # the last has Phi(-4) < 0.001: margin -3|w|
    margins = ofd_margins(weight, bias)
    assert margins.dtype == torch.float32
    torch.testing.assert_close(margins, torch.tensor([-math.sqrt(2 / math.pi), -2 * math.sqrt(2 / math.pi), -1.5]))
    pair = make_pair("resnet32x4", "resnet8x4")
    for bn in pair.teacher.get_bn_before_relu():
        nn.init.uniform_(bn.weight, 0.3, 1.5)
        nn.init.normal_(bn.bias)
    method = OFD.build(pair)
    assert [m.shape[1] for m in method.margins] == [64, 128, 256]
    assert all((m < 0).all() for m in method.margins)
    assert method.teacher_mode() and OFD.preact
    assert OFD.build(make_pair("resnet32x4", "resnet8x4", feat_weight=0.01)).feat_weight == 0.01
    assert "margin0" not in method.state_dict()  # derived from the teacher, not checkpointed


def test_ofd_loss_cases() -> None:
    """The three cases of the partial L2: below-margin teacher, negative teacher above the margin, positive teacher."""
    method = OFD([1], [1], [torch.ones(1)], [torch.zeros(1)])
    margin = method.margins[0]
    m = margin.item()
    with torch.no_grad():
        method.connectors[0][0].weight.fill_(1.0)
    method.eval()  # BN with running stats 0/1: the connector is the identity up to sqrt(1 + eps)
    source = torch.tensor([m + 1.0, m - 1.0, m / 4, m / 2, 1.0, -1.0]).view(1, 1, 1, 6)
    target = torch.tensor([m - 1.0, m - 1.0, m / 2, m / 4, 2.0, 0.5]).view(1, 1, 1, 6)
    got = method.loss([source * math.sqrt(1 + 1e-5)], [target])
    # Counted: S > M with T <= M -> (S - M)^2; S > T with M < T <= 0 -> (S - T)^2; T > 0 -> (S - T)^2.
    want = 1.0 + 0 + (m / 4) ** 2 + 0 + 1.0 + 1.5**2
    torch.testing.assert_close(got, torch.tensor(want))


def test_standardize_properties() -> None:
    logits, _, _ = _logits(batch=5, classes=20)
    z = standardize(logits)
    torch.testing.assert_close(z.mean(1), torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(5), atol=1e-6, rtol=0)  # unbiased std
    # eps is added to the std (not under a square root): a constant row maps to exactly 0.
    assert torch.equal(standardize(torch.full((1, 4), 3.0)), torch.zeros(1, 4))


def test_ls_losses_ignore_logit_scale_and_shift() -> None:
    logits_s, logits_t, target = _logits(batch=6, classes=10)
    logits_s = logits_s.double().requires_grad_()
    logits_t = logits_t.double()
    scale, shift = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.5, torch.randn(6, 1, dtype=torch.float64) * 10
    base = kd_ls_loss(logits_s, logits_t, 2.0)
    # Invariant up to the 1e-7 added to the std.
    torch.testing.assert_close(kd_ls_loss(scale * logits_s + shift, 3 * logits_t - 7, 2.0), base, rtol=1e-5, atol=0)
    dkd_ls = DKDLS(alpha=9, beta=72, T=2)
    torch.testing.assert_close(dkd_ls.loss(scale * logits_s + shift, logits_t, target)[0],
                               dkd_ls.loss(logits_s, logits_t, target)[0], rtol=1e-5, atol=0)
    # The student's gradient flows through the mean and std: it is shift- and scale-free in every row.
    (grad,) = torch.autograd.grad(base, logits_s)
    torch.testing.assert_close(grad.sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    centred = logits_s.detach() - logits_s.detach().mean(1, keepdim=True)
    torch.testing.assert_close((grad * centred).sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    # Raw KD on the same logits depends on the scale: the standardisation is what removes it.
    raw = F.kl_div(F.log_softmax(scale * logits_s / 2, 1), F.softmax(logits_t / 2, 1), reduction="batchmean")
    assert not torch.isclose(raw, F.kl_div(F.log_softmax(logits_s / 2, 1), F.softmax(logits_t / 2, 1),
                                           reduction="batchmean"))


def test_mlkd_needs_the_strong_view_and_adds_its_ce() -> None:
    logits_s, logits_t, target = _logits(batch=4, classes=10)
    strong_s, strong_t, _ = _logits(batch=4, classes=10, seed=1)
    method = MLKD(T=4.0, kd_weight=0.9, ce_weight=0.1)
    step = Step(feats_s=[], feats_t=[], logits_s=logits_s, logits_t=logits_t, target=target)
    with pytest.raises(UserError, match="--augment strong"):
        method(step)
    step.extra = {"logits_s_strong": strong_s, "logits_t_strong": strong_t}
    out = method(step)
    assert set(out) == {"ce_strong", "kd", "cc", "bc"}
    torch.testing.assert_close(out["ce_strong"], 0.1 * F.cross_entropy(strong_s, target))


@pytest.mark.parametrize("batch", [6, 7])
def test_mlkd_masks_only_rescale(batch: int) -> None:
    logits_t, _, _ = _logits(batch=batch, classes=100)
    keep, keep_class = confidence_fractions(logits_t)
    assert keep.item() == pytest.approx(0.5 if batch % 2 == 0 else (batch + 1) / (2 * batch))
    assert keep_class.item() == pytest.approx(0.5)
