"""Train a model from scratch with cross-entropy (the seed's train_teacher.py)."""

from __future__ import annotations

import torch

from distillers.config import RunConfig
from distillers.data.imagefolder import class_names
from distillers.engine.distributed import DistInfo
from distillers.engine.optim import StepSchedule, scaled_lr
from distillers.engine.rng import seed_everything
from distillers.engine.run import Job, Stage, read_data, run_facts, sync_batchnorm
from distillers.errors import UserError
from distillers.models import canonical_name, create_named, default_lr
from distillers.objective import Supervised
from distillers.rundir import teacher_run_name
from distillers.tasks.registry import TASKS


@TASKS.register("teacher")
def teacher_job(cfg: RunConfig, node: DistInfo, device: torch.device) -> Job:
    """Train ``cfg.model`` on ``cfg.dataset`` with the seed's schedule."""
    if not cfg.model:
        raise UserError("--model is required (e.g. --model resnet32x4)")
    model_name = canonical_name(cfg.model)
    train_set, test_set, info = read_data(cfg, input_size=cfg.input_size)
    base_lr = cfg.lr or default_lr(model_name)
    lr = scaled_lr(base_lr, cfg.lr_scaling, node.world_size)
    seed_everything(cfg.seed)  # the initial weights depend on --seed, and only on it
    model, model_name = create_named(model_name, info.num_classes, info.input_size)
    model = sync_batchnorm(model, cfg, device)
    main = Stage("main", Supervised(model), model.parameters, lr, cfg.epochs,
                 StepSchedule(lr, cfg.lr_decay_epochs, cfg.lr_decay_rate), cfg.save_freq)
    return Job(cfg=cfg, name=cfg.name or teacher_run_name(model_name, cfg.dataset, cfg.trial),
               label=f"teacher {model_name}", arch=model_name, data=(train_set, test_set, info), eval_model=model,
               stages=[main], state={"model": model},
               record={"arch": model_name, "num_classes": info.num_classes, "dataset": cfg.dataset},
               facts={"task": "teacher", "model": model_name, "num_classes": info.num_classes,
                      **class_names(train_set), **run_facts(cfg, node, base_lr, lr)},
               fast_models=[model])
