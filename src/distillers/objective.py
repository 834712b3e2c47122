"""Training objectives: what the engine minimises for each task.

Each objective's ``forward(batch)`` returns ``(logits, terms)`` with already-weighted loss terms; the engine
sums them and logs each by name, so TensorBoard shows which term does what.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distillers.methods.base import Method, Step, Weights, kd_loss

# Batch keys the objective consumes itself; every other key reaches the method verbatim in ``Step.extra``.
CONSUMED_KEYS = ("image", "image_strong", "target", "index", "contrast_index")


def features(model: nn.Module, images: Tensor, preact: bool) -> tuple[list[Tensor], Tensor]:
    """RepDistiller's ``model(x, is_feat=True, preact=...)`` as ``(feats, logits)`` (ResNet50 returns a list)."""
    feats, logits = model(images, is_feat=True, preact=preact)
    return list(feats), logits


class TeacherEnsemble(nn.Module):
    """Several frozen teachers as one: logits averaged, or weighted by ``weights`` (normalised to sum 1).

    For the logit methods (``Method.teacher_features`` False): its feature forward gives no features, only the
    combined logits, so a method that reads teacher features is refused before training instead."""

    def __init__(self, teachers: list[nn.Module], names: list[str], weights: list[float] | None = None) -> None:
        super().__init__()
        self.teachers = nn.ModuleList(teachers)
        self.name = "+".join(names)
        weights = weights or [1.0] * len(teachers)
        self.register_buffer("weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.feature_info: list = []
        self.preact_available = True  # no features at all: the logit methods ask for none

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        logits = sum(w.to(x.dtype) * teacher(x) for w, teacher in zip(self.weights, self.teachers))
        return ([], logits) if is_feat else logits


class Supervised(nn.Module):
    """Plain cross-entropy training (teacher training, linear probes)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.model(batch["image"])
        return logits, {"ce": F.cross_entropy(logits, batch["target"])}


class Distillation(nn.Module):
    """``gamma * CE + alpha * KL_T + beta * method``; the teacher is frozen and (but for OFD) in eval mode."""

    def __init__(self, student: nn.Module, teacher: nn.Module, method: Method, weights: Weights,
                 kd_T: float = 4.0) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.method = method
        self.weights = weights
        self.kd_T = kd_T
        self.epoch = 1  # 1-based, set by the engine each epoch (warm-ups of DKD, ReviewKD)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.train(mode and self.method.teacher_mode())
        return self

    def step(self, batch: dict[str, Tensor]) -> Step:
        """Run teacher (no grad) and student and package what methods consume.

        With a strong view (``batch["image_strong"]``, ``--augment strong``) both networks also run on it, in a
        forward of its own, and its logits reach the method as ``extra["logits_s_strong"]`` (with grad) and
        ``extra["logits_t_strong"]``. Separate forwards, student weak then strong, as MLKD's ``KD_ours`` does: one
        concatenated forward would be faster but would normalise each BatchNorm over both views at once.
        """
        images, images_strong = batch["image"], batch.get("image_strong")
        extra = {k: v for k, v in batch.items() if k not in CONSUMED_KEYS}
        # A method that reads logits only (KD, DKD, DIST, ...) gets no features: plain forwards are cheaper.
        logits_only = not self.method.teacher_features
        with torch.no_grad():
            teacher_preact = self.method.teacher_preact
            feats_t, logits_t = ([], self.teacher(images)) if logits_only else \
                features(self.teacher, images, self.method.preact if teacher_preact is None else teacher_preact)
            feats_t = [f.detach() for f in feats_t]
            if images_strong is not None:
                extra["logits_t_strong"] = self.teacher(images_strong).detach()
        feats_s, logits_s = ([], self.student(images)) if logits_only else \
            features(self.student, images, self.method.preact)
        if images_strong is not None:
            extra["logits_s_strong"] = self.student(images_strong)
        return Step(feats_s=feats_s, feats_t=feats_t, logits_s=logits_s, logits_t=logits_t.detach(),
                    target=batch["target"], index=batch.get("index"), contrast_index=batch.get("contrast_index"),
                    epoch=self.epoch, extra=extra)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        step = self.step(batch)
        w = self.weights
        terms: dict[str, Tensor] = {}
        if w.gamma:
            terms["ce"] = w.gamma * F.cross_entropy(step.logits_s, step.target)
        if w.alpha:
            terms["kl"] = w.alpha * kd_loss(step.logits_s, step.logits_t, self.kd_T)
        if w.beta:
            value = self.method(step)
            parts = value if isinstance(value, dict) else {self.method.name: value}
            for name, part in parts.items():
                terms[name] = w.beta * part.reshape(())
        return step.logits_s, terms


class InitStage(nn.Module):
    """The initialisation stage of AB/FT/FSP: the method's init loss alone, weight 1 (RepDistiller pretrain.py).

    Teacher and student are in eval mode; only the modules the method trains in this stage are in train mode.
    """

    def __init__(self, distillation: Distillation) -> None:
        super().__init__()
        self.distillation = distillation
        self.trained = nn.ModuleList(distillation.method.init_modules(distillation.student))

    def train(self, mode: bool = True) -> InitStage:
        super().train(False)
        for module in self.trained:
            module.train(mode)
        return self

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        step = self.distillation.step(batch)
        return step.logits_s, {"init": self.distillation.method.init_loss(step).reshape(())}
