"""Linear-probe transfer of a distilled CIFAR-100 student (the seed's transfer_student.py protocol).

The backbone is frozen, BatchNorm statistics included (it always runs in eval mode); only a new linear head,
initialised N(0, 0.01) with zero bias, is trained on the target dataset resized to 32x32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from distillers.config import RunConfig
from distillers.engine.checkpoint import architecture_of, load_checkpoint, load_weights
from distillers.engine.distributed import DistInfo
from distillers.engine.optim import StepSchedule, scaled_lr
from distillers.engine.rng import seed_everything
from distillers.engine.run import Job, Stage, read_data, run_facts
from distillers.errors import UserError
from distillers.models import MODELS, create_model, default_lr
from distillers.rundir import transfer_run_name
from distillers.tasks.registry import TASKS


def classifier_name(model: nn.Module) -> str:
    """The attribute path of the model's final linear layer (``fc``, ``linear`` or ``classifier``)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no linear classifier to replace")
    return names[-1]


def replace_classifier(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the classifier for a fresh ``Linear`` (N(0, 0.01) weights, zero bias) and return it."""
    path = classifier_name(model)
    parent = model.get_submodule(path.rsplit(".", 1)[0]) if "." in path else model
    old = model.get_submodule(path)
    head = nn.Linear(old.in_features, num_classes)
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
    setattr(parent, path.rsplit(".", 1)[-1], head)
    return head


class LinearProbe(nn.Module):
    """Cross-entropy of a new head on frozen features; the backbone stays in eval mode while training."""

    def __init__(self, model: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.model = model
        self.head = head
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in head.parameters():
            parameter.requires_grad_(True)

    def train(self, mode: bool = True) -> LinearProbe:
        super().train(mode)
        self.model.eval()  # frozen BatchNorm statistics
        return self

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            feats, _ = self.model(batch["image"], is_feat=True)
        logits = self.head(feats[-1].flatten(1))
        return logits, {"ce": F.cross_entropy(logits, batch["target"])}


@TASKS.register("transfer")
def transfer_job(cfg: RunConfig, node: DistInfo, device: torch.device) -> Job:
    """Train a linear probe on a frozen student (``--sync-bn`` changes nothing here: the backbone's BatchNorm is
    frozen and the head has none)."""
    if not cfg.student_path:
        raise UserError("--student-ckpt is required")
    checkpoint = load_checkpoint(cfg.student_path)
    arch = student_arch(cfg, checkpoint)
    model = create_model(arch, num_classes=_classes_in(checkpoint["model"], arch, cfg.student_path))
    try:
        load_weights(model, checkpoint["model"], cfg.student_path, arch)
    except UserError as error:
        raise UserError(f"{error} with --model") from None
    train_set, test_set, info = read_data(cfg)
    seed_everything(cfg.seed)  # the head's initial weights depend on --seed, and only on it
    head = replace_classifier(model, info.num_classes)
    base_lr = cfg.lr or default_lr(arch)
    lr = scaled_lr(base_lr, cfg.lr_scaling, node.world_size)
    main = Stage("main", LinearProbe(model, head), head.parameters, lr, cfg.epochs,
                 StepSchedule(lr, cfg.lr_decay_epochs, cfg.lr_decay_rate), cfg.save_freq)
    name = cfg.name or transfer_run_name(arch, checkpoint.get("dataset", "cifar100"), cfg.dataset, cfg.trial)
    # Resume continues from last.pt's whole model, backbone included: the student file may have changed since.
    return Job(cfg=cfg, name=name, label=f"transfer {arch} -> {cfg.dataset}", arch=f"{arch} transfer",
               data=(train_set, test_set, info), eval_model=model, stages=[main],
               state={"model": model, "head": head},
               record={"arch": arch, "num_classes": info.num_classes, "dataset": cfg.dataset},
               facts={"task": "transfer", "model": arch, "student_path": cfg.student_path,
                      "num_classes": info.num_classes, **run_facts(cfg, node, base_lr, lr)},
               fast_models=[])


def student_arch(cfg: RunConfig, checkpoint: dict[str, Any]) -> str:
    """The student's architecture: ``--model``, else the one the checkpoint records (they must agree)."""
    arch = cfg.model or architecture_of(cfg.student_path, checkpoint, MODELS.names())
    if arch is None:
        raise UserError(f"cannot tell the architecture of {cfg.student_path}; pass --model")
    arch = MODELS.canonical(arch)
    recorded = checkpoint.get("arch")
    if cfg.model and isinstance(recorded, str) and recorded in MODELS.names() and MODELS.canonical(recorded) != arch:
        raise UserError(f"{cfg.student_path} holds a {recorded} model, not {arch}; pass --model {recorded} "
                        f"(or drop --model: the checkpoint records its architecture)")
    return arch


def _classes_in(state: dict[str, Tensor], arch: str, source: str) -> int:
    """The number of classes the checkpoint's classifier was trained for (its classifier weight's rows)."""
    probe = create_model(arch, num_classes=7)
    key = classifier_name(probe) + ".weight"
    if key not in state:
        raise UserError(f"{source} has no {key}: it does not hold a {arch} model; pass the right architecture "
                        f"with --model")
    return int(state[key].shape[0])
