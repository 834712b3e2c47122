"""The fast path's choices, made once per run: where batches come from, bf16 autocast, channels-last, compile."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distillers.config import RunConfig
from distillers.data.loaders import DataInfo
from distillers.errors import UserError


def use_device_data(cfg: RunConfig, train_set: Any, device: torch.device) -> bool:
    """``--data-path``: keep CIFAR-sized uint8 arrays on the GPU and augment there, when possible and asked for.

    Not for datasets stored at another size (STL-10, TinyImageNet resize) nor for the strong view (CPU RandAugment).
    """
    from distillers.data.gpu_loader import array_source, fits_on_device

    if cfg.data_path == "cpu":
        return False
    why_not = None
    if device.type != "cuda":
        why_not = "there is no CUDA device"
    elif cfg.augment == "strong":
        why_not = "--augment strong builds its second view with CPU transforms"
    elif array_source(train_set) is None:
        why_not = f"{cfg.dataset} is not held as one uint8 array of the model's input size"
    elif cfg.data_path == "auto" and not fits_on_device(train_set, device):
        return False
    if why_not is not None:
        if cfg.data_path == "gpu":
            raise UserError(f"--data-path gpu is not possible: {why_not}; use --data-path cpu or auto")
        return False
    return True


def train_loader(cfg: RunConfig, train_set: Any, info: DataInfo, device: torch.device, default_loader: Any) -> Any:
    """The GPU-resident loader when chosen, else the DataLoader the task built."""
    if not use_device_data(cfg, train_set, device):
        return default_loader
    from distillers.data import DATASETS
    from distillers.data.gpu_loader import GpuLoader
    from distillers.engine import distributed

    spec = DATASETS.get(cfg.dataset)
    node = distributed.current()  # each process keeps the whole dataset and takes its shard of every epoch
    return GpuLoader.from_dataset(train_set, cfg.batch_size, device=device, mean=info.mean, std=info.std,
                                  seed=cfg.seed, rank=node.rank, world_size=node.world_size, padding=spec.padding,
                                  flip=spec.flip, channels_last=cfg.channels_last)


def amp_enabled(cfg: RunConfig, device: torch.device) -> bool:
    """``--amp``: bf16 autocast on GPUs that support it (auto), forced on or off."""
    supported = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if cfg.amp == "on" and not supported:
        raise UserError("--amp on needs a CUDA GPU with bfloat16 support; use --amp auto or off")
    return supported and cfg.amp != "off"


def prepare(models: list[nn.Module], cfg: RunConfig, device: torch.device) -> None:
    """channels-last memory format on CUDA (faster convolutions under autocast); ``--compile`` with fallback."""
    if device.type == "cuda" and cfg.channels_last:
        for model in models:
            model.to(memory_format=torch.channels_last)
    if cfg.compile:
        for model in models:
            try:
                model.forward = torch.compile(model.forward)
            except Exception as error:  # compilation is an optimisation: never fail a run because of it
                print(f"compile unavailable ({type(error).__name__}: {error}); continuing eagerly")
