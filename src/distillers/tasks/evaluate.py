"""Evaluate a checkpoint (ours or RepDistiller's) on a dataset's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from distillers.data.loaders import make_loader
from distillers.engine import distributed
from distillers.engine.checkpoint import architecture_of, load_checkpoint, load_weights
from distillers.engine.device import resolve_device
from distillers.engine.metrics import evaluate
from distillers.errors import UserError
from distillers.models import MODELS, create_model
from distillers.models.sources import external_from_state, is_external_name


def load_model(path: str | Path, arch: str | None, num_classes: int, arch_flag: str = "--model",
               checkpoint: dict[str, Any] | None = None) -> tuple[nn.Module, str, dict[str, Any]]:
    """Build the checkpoint's architecture (given, recorded, or from a RepDistiller folder name) and load it;
    ``arch_flag`` is the flag that names the architecture in the calling command (for the error message)."""
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    name = arch or architecture_of(path, checkpoint, MODELS.names())
    if name is None:
        raise UserError(f"cannot tell the architecture of {path}: it records none and its folder name does not "
                        f"start with a model name; pass it explicitly (e.g. {arch_flag} resnet32x4)")
    if is_external_name(name):  # timm:<name> / torchvision:<name>: built and loaded by models/sources.py
        return external_from_state(name, checkpoint["model"], num_classes, str(path)), name, checkpoint
    name = MODELS.canonical(name)
    model = create_model(name, num_classes)
    check_num_classes(model, checkpoint["model"], num_classes, path)
    load_weights(model, checkpoint["model"], str(path), name)
    return model, name, checkpoint


def check_num_classes(model: nn.Module, state: dict[str, Any], num_classes: int, path: str | Path) -> None:
    """Say plainly when a checkpoint's classifier was trained for another number of classes."""
    for key, own in model.state_dict().items():
        theirs = state.get(key)
        if theirs is not None and own.ndim >= 1 and own.shape[0] == num_classes and theirs.ndim == own.ndim \
                and theirs.shape[1:] == own.shape[1:] and theirs.shape[0] != num_classes:
            raise UserError(f"{path} was trained on {theirs.shape[0]} classes but the dataset has {num_classes}; "
                            f"use a checkpoint trained on this dataset")


def evaluate_checkpoint(path: str, dataset: str, data_dir: str, arch: str | None = None, batch_size: int = 128,
                        device: str = "auto", workers: int = 2, download: bool = False) -> dict[str, Any]:
    """Top-1/top-5 and loss of a checkpoint on the test split; under torchrun each process scores its share."""
    from distillers.data import load_datasets

    checkpoint = load_checkpoint(path)
    # A model trained on a folder of images at another size is scored at that size.
    config = checkpoint.get("config")
    input_size = config.get("input_size") if isinstance(config, dict) and config.get("dataset") == dataset else None

    def read() -> Any:
        return load_datasets(dataset, data_dir, download=download, input_size=input_size)

    with distributed.launched(str(resolve_device(device))) as (node, name):
        torch_device = resolve_device(name)
        _, test_set, info = distributed.in_turn(read) if download else read()
        model, arch_name, _ = load_model(path, arch, info.num_classes, checkpoint=checkpoint)
        model.to(torch_device)
        loader = make_loader(test_set, batch_size, False, workers, 0, torch_device, node.rank, node.world_size)
        return {"arch": arch_name, **evaluate(model, loader, torch_device)}
