"""Train a model from scratch with cross-entropy (the seed's train_teacher.py)."""

from __future__ import annotations

from typing import Any

import torch

from distillers.config import RunConfig
from distillers.engine.checkpoint import load_weights
from distillers.engine.distributed import DistInfo
from distillers.engine.trainer import StepSchedule, Trainer, seed_everything, set_rng_state
from distillers.errors import UserError
from distillers.models import MODELS, create_model, default_lr
from distillers.objective import Supervised
from distillers.rundir import teacher_run_name
from distillers.tasks import speed
from distillers.tasks.common import (load_optimizer, process_group, read_data, run_facts, run_single_stage, scaled_lr,
                                     sgd, start, sync_batchnorm, task_loaders)


def train_teacher(cfg: RunConfig) -> dict[str, Any]:
    """Train ``cfg.model``, in this process or in each of the processes torchrun started."""
    with process_group(cfg.device) as (node, device):
        return _train_teacher(cfg, node, device)


def _train_teacher(cfg: RunConfig, node: DistInfo, device: torch.device) -> dict[str, Any]:
    if not cfg.model:
        raise UserError("--model is required (e.g. --model resnet32x4)")
    model_name = MODELS.canonical(cfg.model)
    cfg.validate()
    train_set, test_set, info = read_data(cfg)
    base_lr = cfg.lr or default_lr(model_name)
    lr = scaled_lr(cfg, base_lr, node.world_size)
    name = cfg.name or teacher_run_name(model_name, cfg.dataset, cfg.trial)
    seed_everything(cfg.seed)  # the initial weights depend on --seed, and only on it
    model = sync_batchnorm(create_model(model_name, info.num_classes), cfg, device)
    # A resumed checkpoint of another architecture is refused before the run directory is touched.
    launch = start(cfg, name, {"task": "teacher", "model": model_name, "num_classes": info.num_classes,
                               **run_facts(cfg, node, base_lr, lr)},
                   check_resume=lambda resume, path: load_weights(model, resume["model"], path, model_name),
                   node=node, device=device)
    model.to(device)
    speed.prepare([model], cfg, device)
    optimizer = sgd(model.parameters(), cfg, lr, device)
    if launch.resume is not None:
        load_optimizer(optimizer, launch.resume, launch.run_dir)
        set_rng_state(launch.resume["rng"])
    train_loader, test_loader = task_loaders(cfg, train_set, test_set, info, device, node)
    trainer = Trainer(
        objective=Supervised(model), eval_model=model, optimizer=optimizer,
        schedule=StepSchedule(lr, cfg.lr_decay_epochs, cfg.lr_decay_rate),
        train_loader=train_loader, test_loader=test_loader,
        device=device, logger=launch.logger, seed=cfg.seed, save_freq=cfg.save_freq,
        max_steps=cfg.max_steps_per_epoch, amp=speed.amp_enabled(cfg, device),
        checkpoint_payload=lambda: {"model": model.state_dict(), "arch": model_name, "num_classes": info.num_classes,
                                    "dataset": cfg.dataset, "config": cfg.to_dict()})

    return run_single_stage(launch, trainer, node, f"teacher {model_name}")
