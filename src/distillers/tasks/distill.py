"""Distil a student from a frozen teacher with any registered method (the seed's train_student.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distillers.config import RunConfig
from distillers.engine.checkpoint import load_weights
from distillers.engine.distributed import DistInfo
from distillers.engine.trainer import StepSchedule, Trainer, evaluate, seed_everything, set_rng_state
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Weights
from distillers.methods.base import Method
from distillers.models import MODELS, create_model, default_lr
from distillers.objective import Distillation, InitStage
from distillers.rundir import distill_run_name
from distillers.tasks.common import (finish_line, print_line, process_group, progress_from, read_data, run_facts,
                                     run_guarded, scaled_lr, sgd, stage_result, start, sync_batchnorm, task_loaders)
from distillers.tasks import speed
from distillers.tasks.evaluate import load_model


def resolve_weights(cfg: RunConfig, default: Weights) -> Weights:
    """``-r/-a/-b`` as given, else the seed's run-script values for the method."""
    weights = Weights(gamma=default.gamma if cfg.gamma is None else cfg.gamma,
                      alpha=default.alpha if cfg.alpha is None else cfg.alpha,
                      beta=default.beta if cfg.beta is None else cfg.beta)
    if min(weights.gamma, weights.alpha, weights.beta) < 0:
        raise UserError(f"-r/-a/-b must be >= 0, got r {weights.gamma} a {weights.alpha} b {weights.beta}")
    if weights.gamma == weights.alpha == weights.beta == 0:
        raise UserError("-r, -a and -b are all 0: the objective would be empty; give at least one a positive weight")
    return weights


def sample_mode(method_cls: type[Method], options) -> str:
    """What each training item must carry for the method: plain, with its index, or with CRD's contrast rows."""
    needs_index, needs_contrast = method_cls.data_needs(options)
    if needs_contrast:
        return "contrast"
    return "index" if needs_index else "plain"


def check_augment(cfg: RunConfig, method_cls: type) -> None:
    """A method that trains on two views (MLKD) cannot run on one: refuse before any data is read."""
    if getattr(method_cls, "needs_strong_view", False) and cfg.augment != "strong":
        raise UserError(f"method {method_cls.name!r} trains on a weak and a strong augmented view of every image "
                        f"(got --augment {cfg.augment}); pass --augment strong")


def run_protocol(method: Method, augment: str) -> str:
    """The protocol recorded in config.json: the method's own, with ``strong-aug`` marking a strong second view
    that the method's published protocol does not include (reports never compare such runs with CRD tables)."""
    protocol = method.protocol
    if augment != "strong" or getattr(method, "needs_strong_view", False):
        return protocol
    return "strong-aug" if protocol == "crd" else f"{protocol}+strong-aug"


def distill(cfg: RunConfig) -> dict[str, Any]:
    """Distil ``cfg.student`` from ``cfg.teacher_path``, in this process or in each process torchrun started."""
    with process_group(cfg.device) as (node, device):
        return _distill(cfg, node, device)


def _distill(cfg: RunConfig, node: DistInfo, device: torch.device) -> dict[str, Any]:
    for flag, value in (("--teacher", cfg.teacher_path), ("--student", cfg.student), ("--method", cfg.method)):
        if not value:
            raise UserError(f"{flag} is required")
    cfg.validate()
    method_cls = METHODS.get(cfg.method)
    method_name = method_cls.name
    student_name = MODELS.canonical(cfg.student)
    weights = resolve_weights(cfg, method_cls.weights)
    check_augment(cfg, method_cls)
    options = cfg.method_options
    # The strong view is built by CPU transforms (RandAugment, Cutout); a device-resident data path must not be
    # used with it, since it would rebuild batches from the raw arrays and drop ``image_strong``.
    train_set, test_set, info = read_data(cfg, sample=sample_mode(method_cls, options), nce_k=options.nce_k,
                                          mode=options.mode, augment=cfg.augment)
    if node.rank and hasattr(train_set, "seed"):
        # CRD's contrast rows are drawn per process from (seed, epoch): each rank its own stream, not rank 0's.
        train_set.seed = int(np.random.SeedSequence([train_set.seed, node.rank]).generate_state(1)[0])
    # Everything that can be wrong is checked here, before the run directory exists or any training starts.
    teacher, teacher_name, _ = load_model(cfg.teacher_path, cfg.teacher, info.num_classes, "--teacher-arch")
    seed_everything(cfg.seed)  # the student's and the method's initial weights follow --seed
    student = create_model(student_name, info.num_classes)
    pair = Pair(student=student, teacher=teacher, student_name=student_name, teacher_name=teacher_name,
                num_classes=info.num_classes, num_data=info.num_train, input_size=info.input_size, options=options)
    method = method_cls.build(pair)
    method.check_batch_size(cfg.batch_size)  # queues hold whole global batches: after the process group is up
    student = sync_batchnorm(student, cfg, device)
    base_lr = cfg.lr or default_lr(student_name)
    lr = scaled_lr(cfg, base_lr, node.world_size)
    protocol = run_protocol(method, cfg.augment)
    name = cfg.name or distill_run_name(student_name, teacher_name, cfg.dataset, method_name, weights.gamma,
                                        weights.alpha, weights.beta, cfg.trial)
    if cfg.name is None and protocol != method_cls.protocol:  # e.g. a strong-view or CRD-queue run: its own dir
        name += f"_{protocol}"
    def check_resume(checkpoint: dict[str, Any], path: str) -> None:
        """Refuse a resume checkpoint of another student or method before the run directory is touched."""
        load_weights(student, checkpoint["model"], path, student_name)
        try:
            method.load_state_dict(checkpoint["method_state"])
        except (KeyError, RuntimeError) as error:
            raise UserError(f"{path} does not hold the state of method {method_name} for this pair; resume with "
                            f"the settings it was started with, or start again with --overwrite") from error

    launch = start(cfg, name, {"task": "distill", "student": student_name, "teacher": teacher_name,
                               "method": method_name, "weights": vars(weights), "num_classes": info.num_classes,
                               "protocol": protocol, **run_facts(cfg, node, base_lr, lr)}, check_resume, node, device)
    device, logger, resume = launch.device, launch.logger, launch.resume
    if cfg.augment == "strong" and not getattr(method_cls, "needs_strong_view", False):
        logger.info(f"--augment strong: {method_name} does not read the strong view's logits; the student still runs "
                    f"on it (its BatchNorm statistics see both views), so this run is marked protocol {protocol}")
    objective = Distillation(student, teacher, method, weights, options.kd_T).to(device)
    speed.prepare([student, teacher], cfg, device)
    train_loader, test_loader = task_loaders(cfg, train_set, test_set, info, device, node)

    def payload() -> dict[str, Any]:
        state = {"model": student.state_dict(), "arch": student_name, "num_classes": info.num_classes,
                 "dataset": cfg.dataset, "teacher_arch": teacher_name, "method": method_name,
                 "method_state": method.state_dict(), "config": cfg.to_dict()}
        if method.teacher_mode():  # OFD trains the teacher's BN statistics: keep them for an exact resume
            state["teacher_state"] = teacher.state_dict()
        return state

    if resume is not None:  # student and method state were loaded by check_resume
        if "teacher_state" in resume:
            teacher.load_state_dict(resume["teacher_state"])
        teacher_acc = logger.summary().get("teacher_acc") if node.is_main else None
    else:
        teacher_acc = evaluate(teacher, test_loader, device)["test_acc"]  # every rank scores its share
        if node.is_main:
            logger.summary(teacher_acc=teacher_acc)
        logger.info(f"teacher {teacher_name}: test top-1 {teacher_acc:.2f}%")
    schedule = StepSchedule(lr, cfg.lr_decay_epochs, cfg.lr_decay_rate)
    # Methods may leave trainable parameters without a gradient (RRD's teacher head, heads under -b 0, the
    # student's classifier under -r 0 -a 0): DDP must look for them every step.
    common = dict(eval_model=student, train_loader=train_loader, test_loader=test_loader, device=device,
                  logger=logger, checkpoint_payload=payload, seed=cfg.seed, max_steps=cfg.max_steps_per_epoch,
                  amp=speed.amp_enabled(cfg, device), find_unused_parameters=True)

    def body() -> dict[str, Any]:
        resumed_stage = resume.get("stage", "main") if resume is not None else None
        if method_cls.init_stage and options.init_epochs > 0 and resumed_stage != "main":
            init = InitStage(objective)
            init_lr = method.init_lr(student_name, lr)
            optimizer = sgd(init.trained.parameters(), cfg, init_lr, device)
            if resumed_stage == "init":
                optimizer.load_state_dict(resume["optimizer"])
                set_rng_state(resume["rng"])
            Trainer(objective=init, optimizer=optimizer, schedule=StepSchedule(init_lr), stage="init",
                    **common).fit(options.init_epochs, progress_from(resume, "init", node, cfg.batch_size))
        if method_cls.init_stage:
            method.end_init_stage()
        optimizer = sgd(list(student.parameters()) + list(method.main_parameters()), cfg, lr, device)
        if resumed_stage == "main":
            optimizer.load_state_dict(resume["optimizer"])
            set_rng_state(resume["rng"])
        progress = Trainer(objective=objective, optimizer=optimizer, schedule=schedule, save_freq=cfg.save_freq,
                           **common).fit(cfg.epochs, progress_from(resume, "main", node, cfg.batch_size))
        return {**stage_result(progress, launch.run_dir), "teacher_acc": teacher_acc}

    summary = run_guarded(launch, body)
    print_line(finish_line(f"{method_name} {teacher_name} -> {student_name}", launch.run_dir, summary))
    return summary
