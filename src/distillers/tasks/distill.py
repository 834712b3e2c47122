"""Distil a student from a frozen teacher with any registered method (the seed's train_student.py)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from distillers.config import RunConfig
from distillers.data.imagefolder import class_names
from distillers.engine.distributed import DistInfo
from distillers.engine.optim import StepSchedule, scaled_lr
from distillers.engine.rng import seed_everything
from distillers.engine.run import Baseline, Job, Stage, read_data, run_facts, sync_batchnorm
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Weights
from distillers.methods.base import Method
from distillers.models import canonical_name, create_model, default_lr
from distillers.models.sources import (
    check_method,
    external_student,
    external_teacher,
    is_external_name,
    own_preprocessing,
    several_teachers,
    zoo_teacher_file,
)
from distillers.objective import Distillation, InitStage, TeacherEnsemble
from distillers.rundir import distill_run_name
from distillers.tasks.evaluate import load_model
from distillers.tasks.registry import TASKS


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


def check_augment(cfg: RunConfig, method_cls: type[Method]) -> None:
    """A method that trains on two views (MLKD) cannot run on one: refuse before any data is read."""
    if method_cls.needs_strong_view and cfg.augment != "strong":
        raise UserError(f"method {method_cls.name!r} trains on a weak and a strong augmented view of every image "
                        f"(got --augment {cfg.augment}); pass --augment strong")


def run_protocol(method: Method, augment: str) -> str:
    """The protocol recorded in config.json: the method's own, with ``strong-aug`` marking a strong second view
    that the method's published protocol does not include (reports never compare such runs with CRD tables)."""
    protocol = method.protocol
    if augment != "strong" or method.needs_strong_view:
        return protocol
    return "strong-aug" if protocol == "crd" else f"{protocol}+strong-aug"


def trained_parameters(student: nn.Module, method: Method) -> Iterable[nn.Parameter]:
    """What the main stage's optimiser updates: the student and the method's own modules."""
    return itertools.chain(student.parameters(), method.main_parameters())


@TASKS.register("distill")
def distill_job(cfg: RunConfig, node: DistInfo, device: torch.device) -> Job:
    """Distil ``cfg.student`` from the teacher checkpoint ``cfg.teacher_path`` with ``cfg.method``."""
    teacher_given = cfg.teacher_path or cfg.teacher_weights or cfg.pretrained in ("teacher", "both")
    for flag, value in (("--teacher", teacher_given), ("--student", cfg.student), ("--method", cfg.method)):
        if not value:
            raise UserError(f"{flag} is required")
    method_cls = METHODS.get(cfg.method)
    # config.json records every resolved value; a new MethodOptions, since a sweep's runs share the raw one.
    options = cfg.method_options = replace(cfg.method_options,
                                           extra=method_cls.resolve_options(cfg.method_options.extra))
    student_name = canonical_name(cfg.student)
    weights = resolve_weights(cfg, method_cls.weights)
    check_augment(cfg, method_cls)
    train_set, test_set, info = read_data(cfg, sample=sample_mode(method_cls, options), nce_k=options.nce_k,
                                          mode=options.mode, augment=cfg.augment, input_size=cfg.input_size)
    if node.rank and hasattr(train_set, "seed"):
        # CRD's contrast rows are drawn per process from (seed, epoch): each rank its own stream, not rank 0's.
        train_set.seed = int(np.random.SeedSequence([train_set.seed, node.rank]).generate_state(1)[0])
    teacher, teacher_name = load_teachers(cfg, info, method_cls)
    seed_everything(cfg.seed)  # the student's and the method's initial weights follow --seed
    student, student_name = external_student(cfg, info) if is_external_name(student_name) else \
        (create_model(student_name, info.num_classes), student_name)
    check_method(method_cls, teacher, student, teacher_name, student_name)  # e.g. AB on a timm model
    pair = Pair(student=student, teacher=teacher, student_name=student_name, teacher_name=teacher_name,
                num_classes=info.num_classes, num_data=info.num_train, input_size=info.input_size, options=options)
    method = method_cls.build(pair)
    method.check_batch_size(cfg.batch_size)  # queues hold whole global batches
    student = sync_batchnorm(student, cfg, device)
    objective = Distillation(student, teacher, method, weights, options.kd_T)
    base_lr = cfg.lr or default_lr(student_name)
    lr = scaled_lr(base_lr, cfg.lr_scaling, node.world_size)
    protocol = run_protocol(method, cfg.augment)
    name = cfg.name or distill_run_name(student_name, teacher_name, cfg.dataset, method.name, weights.gamma,
                                        weights.alpha, weights.beta, cfg.trial)
    if cfg.name is None and protocol != method_cls.protocol:  # e.g. a strong-view or CRD-queue run: its own dir
        name += f"_{protocol}"
    main = Stage("main", objective, functools.partial(trained_parameters, student, method), lr, cfg.epochs,
                 StepSchedule(lr, cfg.lr_decay_epochs, cfg.lr_decay_rate), cfg.save_freq)
    state = {"model": student, "method_state": method}
    if method.teacher_mode():  # OFD trains the teacher's BN statistics: keep them for an exact resume
        state["teacher_state"] = teacher
    logs = [] if cfg.augment != "strong" or method.needs_strong_view else [
        f"--augment strong: {method.name} does not read the strong view's logits; the student still runs on it "
        f"(its BatchNorm statistics see both views), so this run is marked protocol {protocol}"]
    facts = {"task": "distill", "student": student_name, "teacher": teacher_name, "method": method.name,
             "weights": vars(weights), "num_classes": info.num_classes, "protocol": protocol,
             **class_names(train_set), **run_facts(cfg, node, base_lr, lr)}
    return Job(cfg=cfg, name=name, label=f"{method.name} {teacher_name} -> {student_name}", arch=student_name,
               data=(train_set, test_set, info), eval_model=student,
               stages=init_stages(method, objective, options.init_epochs, student_name, lr) + [main], state=state,
               record={"arch": student_name, "num_classes": info.num_classes, "dataset": cfg.dataset,
                       "teacher_arch": teacher_name, "method": method.name},
               facts=facts,
               fast_models=[student, teacher], baseline=Baseline(teacher, "teacher_acc", f"teacher {teacher_name}"),
               logs=logs, nonfinite_advice=method.nonfinite_advice)


def load_teachers(cfg: RunConfig, info: Any, method_cls: type[Method]) -> tuple[nn.Module, str]:
    """The frozen teacher: a zoo checkpoint, or a timm/torchvision model with its own normalisation; with
    ``--teacher`` given more than once (logit methods), their averaged or weighted logits."""
    teacher, name = external_teacher(cfg, info) if is_external_name(cfg.teacher) else \
        load_model(zoo_teacher_file(cfg), cfg.teacher, info.num_classes, "--teacher-arch")[:2]
    teacher = own_preprocessing(teacher, info.mean, info.std)  # an external teacher's own normalisation
    if not cfg.extra_teachers:
        return teacher, name
    ensemble = TeacherEnsemble(*several_teachers(cfg, info, method_cls, teacher, name, load_model))
    return ensemble, ensemble.name


def init_stages(method: Method, objective: Distillation, epochs: int, student_name: str, lr: float) -> list[Stage]:
    """AB, FT and FSP first train their own modules alone (RepDistiller's pretrain.py), then freeze or switch them."""
    if not method.init_stage:
        return []
    init = InitStage(objective)
    init_lr = method.init_lr(student_name, lr)
    return [Stage("init", init, init.trained.parameters, init_lr, epochs, StepSchedule(init_lr),
                  on_end=method.end_init_stage)]
