"""Side-by-side training speed: the seed's data path and loop against ours, in one process, same pair and method.

For every (teacher, student, method) case both pipelines train the same randomly initialised pair (no checkpoint
needed) with the same method, weights and batch size on synthetic CIFAR-shaped uint8 data (speed depends on the
format, not the content):

- seed: torchvision PIL transforms in DataLoader workers, float32 NCHW, default SGD, ``loss.item()`` every step as
  RepDistiller's ``train_distill`` loop does, teacher forward under ``no_grad``;
- ours: exactly what ``distill`` runs with the same flags (``--data-path``, ``--amp``, ``--channels-last``,
  ``--compile``, ``--deterministic``): the ``engine.speed`` choices (device-resident data or the task's DataLoader,
  autocast, memory format, compile with its fallback, cuDNN settings), the engine's SGD builder, and the loss kept
  on the device (no per-step host sync). Every row records what was chosen.

Each pipeline runs ``warmup`` steps, then ``steps`` timed steps, synchronising the device before reading the clock.
Rows report images/s of both, the ratio, and peak memory (CUDA: max allocated; CPU: the main process's peak RSS),
plus each data path's throughput alone (batches delivered on the device, no model: the ceiling it puts on training).
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distillers.config import MethodOptions, RunConfig
from distillers.data.base import ArrayImages
from distillers.data.gpu_loader import DeviceLoader
from distillers.data.loaders import DataInfo, make_loader
from distillers.data.sampling import ContrastSampler, SampledDataset
from distillers.data.transforms import CIFAR100_MEAN, CIFAR100_STD, train_transform
from distillers.engine import speed
from distillers.engine.device import resolve_device, to_device
from distillers.engine.optim import sgd
from distillers.errors import UserError
from distillers.methods import METHODS, Pair
from distillers.models import MODELS, create_model, default_lr
from distillers.objective import Distillation
from distillers.peak_memory import PeakMemory

NUM_CLASSES = 100


@dataclass(frozen=True)
class Case:
    """One benchmarked configuration: a teacher, a student and a method."""

    teacher: str
    student: str
    method: str = "kd"

    @property
    def label(self) -> str:
        return f"{self.teacher} -> {self.student}"


DEFAULT_CASES = (Case("resnet32x4", "resnet8x4", "kd"), Case("resnet32x4", "resnet8x4", "crd"),
                 Case("wrn_40_2", "wrn_16_2", "kd"), Case("ResNet50", "MobileNetV2", "kd"))


def parse_case(text: str) -> Case:
    """``TEACHER:STUDENT`` or ``TEACHER:STUDENT:METHOD`` (``->`` also separates teacher and student)."""
    parts = text.replace("->", ":").split(":")
    if len(parts) not in (2, 3) or not all(part.strip() for part in parts):
        raise UserError(f"cannot read the pair {text!r}; write TEACHER:STUDENT or TEACHER:STUDENT:METHOD, "
                        f"e.g. resnet32x4:resnet8x4:kd")
    return Case(*(part.strip() for part in parts))


def resolve_cases(pairs: Iterable[str | Sequence[str] | Case] | None, methods: Sequence[str] | None) -> list[Case]:
    """The cases to run: given pairs (default: ``DEFAULT_CASES``); ``methods`` replaces each pair's method."""
    if pairs is None:
        base = list(DEFAULT_CASES)
    else:
        base = [p if isinstance(p, Case) else parse_case(p) if isinstance(p, str) else Case(*p) for p in pairs]
    if methods:
        pairs_only = list(dict.fromkeys((case.teacher, case.student) for case in base))
        base = [Case(teacher, student, method) for teacher, student in pairs_only for method in methods]
    cases = list(dict.fromkeys(Case(MODELS.canonical(c.teacher), MODELS.canonical(c.student),
                                    METHODS.canonical(c.method)) for c in base))  # unknown names: UserError
    if not cases:
        raise UserError("no pairs to benchmark; pass at least one TEACHER:STUDENT")
    return cases


def synthetic_cifar(num_images: int, num_classes: int = NUM_CLASSES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ``(N, 32, 32, 3)`` uint8 images with balanced int64 labels: CIFAR's format, not its content."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, 32, 32, 3), dtype=np.uint8)
    return images, rng.permutation(np.arange(num_images) % num_classes).astype(np.int64)


def build_objective(case: Case, num_data: int, options: MethodOptions, batch_size: int, seed: int = 0
                    ) -> Distillation:
    """The distillation objective of ``case`` with random-init models (identical for an identical ``seed``)."""
    torch.manual_seed(seed)
    teacher, student = create_model(case.teacher, NUM_CLASSES), create_model(case.student, NUM_CLASSES)
    method_cls = METHODS.get(case.method)
    method = method_cls.build(Pair(student=student, teacher=teacher, student_name=case.student,
                                   teacher_name=case.teacher, num_classes=NUM_CLASSES, num_data=num_data,
                                   input_size=32, options=options))
    method.check_batch_size(batch_size)
    return Distillation(student, teacher, method, method_cls.weights, options.kd_T)


def make_optimizer(objective: Distillation, lr: float, fused: bool) -> torch.optim.SGD:
    """The seed's SGD over the student and the method's modules; ``fused`` picks the one-kernel implementation."""
    params = [p for p in [*objective.student.parameters(), *objective.method.main_parameters()] if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": lr, "momentum": 0.9, "weight_decay": 5e-4}
    if fused:
        kwargs["fused"] = True
    return torch.optim.SGD(params, **kwargs)


def _train_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor],
                autocast: Callable[[], contextlib.AbstractContextManager]) -> Tensor:
    with autocast():
        _logits, terms = objective(batch)
    loss = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def seed_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor]) -> float:
    """One step as the seed runs it: float32, and ``loss.item()`` (a host sync) every step."""
    return _train_step(objective, optimizer, batch, contextlib.nullcontext).item()


def fast_step(objective: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, Tensor],
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> Tensor:
    """One step of ours: under ``autocast``; returns the loss as a device tensor (no sync)."""
    return _train_step(objective, optimizer, batch, autocast)


def endless(loader: Iterable[dict[str, Tensor]]) -> Iterator[dict[str, Tensor]]:
    """Batches across epochs (``sampler.set_epoch`` called when the loader has one)."""
    epoch = 0
    while True:
        epoch += 1
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        yield from loader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Settings:
    """What every case of one benchmark shares."""

    batch_size: int
    steps: int
    warmup: int
    device: torch.device
    data_path: str  # ours: --data-path as given (auto | device | gpu | cpu)
    amp: str  # ours: --amp (auto | on | off)
    channels_last: str  # ours: --channels-last (auto | on | off)
    compile: bool
    deterministic: bool
    workers: int
    seed: int
    options: MethodOptions


def _time(step: Callable[[dict[str, Tensor]], Any], batches: Iterator[dict[str, Tensor]], settings: Settings,
          before_timing: Callable[[], None] = lambda: None) -> float:
    """Seconds for ``settings.steps`` steps after ``settings.warmup`` untimed ones."""
    for _ in range(settings.warmup):
        step(next(batches))
    before_timing()
    _synchronize(settings.device)
    started = time.perf_counter()
    for _ in range(settings.steps):
        step(next(batches))
    _synchronize(settings.device)
    return time.perf_counter() - started


def _loader_rate(loader: Iterable[dict[str, Tensor]], settings: Settings) -> float:
    """Images/s of a data path alone (batches on the device, no model), after ``warmup`` batches."""
    batches = endless(loader)
    seconds = _time(lambda batch: to_device(batch, settings.device), batches, settings)
    batches.close()
    return settings.steps * settings.batch_size / seconds


def _needs(case: Case, options: MethodOptions) -> tuple[bool, bool]:
    needs_index, needs_contrast = METHODS.get(case.method).data_needs(options)
    return needs_index or needs_contrast, needs_contrast


def _dataset(images: np.ndarray, labels: np.ndarray, case: Case, options: MethodOptions, seed: int
             ) -> SampledDataset:
    """CIFAR-style items with PIL transforms, plus the index / contrast rows the method needs."""
    needs_index, needs_contrast = _needs(case, options)
    contrast = ContrastSampler(labels, options.nce_k, options.mode, seed=seed) if needs_contrast else None
    return SampledDataset(ArrayImages(images, labels, train_transform(CIFAR100_MEAN, CIFAR100_STD)), needs_index,
                          contrast, seed)


class _PerImage(SampledDataset):
    """The seed draws CRD's contrast rows image by image: no batch fetch (``__getitems__``)."""

    __getitems__ = None  # type: ignore[assignment]


def _worker_loader(images: np.ndarray, labels: np.ndarray, case: Case, settings: Settings) -> DataLoader:
    """The seed's data path: PIL transforms and contrast rows per image in DataLoader workers (RepDistiller's)."""
    dataset = _dataset(images, labels, case, settings.options, settings.seed)
    dataset.__class__ = _PerImage
    # drop_last: every timed step has a full batch (images/s counts steps * batch_size; no recompile on shape)
    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, num_workers=settings.workers,
                      drop_last=True)


def _run_seed(case: Case, images: np.ndarray, labels: np.ndarray, settings: Settings, memory: PeakMemory
              ) -> dict[str, float]:
    benchmark_flag = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # the seed sets it
    try:
        return _seed_pipeline(case, images, labels, settings, memory)
    finally:
        torch.backends.cudnn.benchmark = benchmark_flag


def _seed_pipeline(case: Case, images: np.ndarray, labels: np.ndarray, settings: Settings, memory: PeakMemory
                   ) -> dict[str, float]:
    memory.reset()
    objective = build_objective(case, len(labels), settings.options, settings.batch_size, settings.seed)
    objective = objective.to(settings.device).train()
    optimizer = make_optimizer(objective, default_lr(case.student), fused=False)
    batches = endless(_worker_loader(images, labels, case, settings))
    losses: list[float] = []

    def step(batch: dict[str, Tensor]) -> None:
        batch = {key: value.to(settings.device) for key, value in batch.items()}  # blocking copies, as the seed
        losses.append(seed_step(objective, optimizer, batch))

    seconds = _time(step, batches, settings)
    batches.close()  # stops the workers before the next pipeline runs
    peak = memory.read_mb()
    loader_rate = _loader_rate(_worker_loader(images, labels, case, settings), settings)
    timed = losses[settings.warmup:]
    return {"images_per_s": settings.steps * settings.batch_size / seconds, "peak_mb": peak,
            "loss": float(np.mean(timed)), "loader_images_per_s": loader_rate}


def ours_config(settings: Settings) -> RunConfig:
    """The RunConfig ``distill`` would get from the same flags: the bench asks the same ``engine.speed`` questions."""
    return RunConfig(task="distill", device=str(settings.device), data_path=settings.data_path, amp=settings.amp,
                     channels_last=settings.channels_last, compile=settings.compile,
                     deterministic=settings.deterministic, workers=settings.workers, batch_size=settings.batch_size,
                     seed=settings.seed, method_options=settings.options)


def _ours_loader(case: Case, images: np.ndarray, labels: np.ndarray, cfg: RunConfig, device: torch.device) -> Any:
    """What ``distill`` trains from: ``speed.train_loader`` over the task's DataLoader (``data.loaders.make_loader``).

    ``drop_last`` on the device-resident loader: every timed step has a full batch (images/s = steps * batch).
    """
    dataset = _dataset(images, labels, case, cfg.method_options, cfg.seed)
    default = make_loader(dataset, cfg.batch_size, True, cfg.workers, cfg.seed, device)
    info = DataInfo("synthetic", NUM_CLASSES, len(labels), 0, 32, CIFAR100_MEAN, CIFAR100_STD)
    loader = speed.train_loader(cfg, dataset, info, device, default)
    if loader is not default:
        loader.drop_last = True
    return loader


def _run_ours(case: Case, images: np.ndarray, labels: np.ndarray, settings: Settings, memory: PeakMemory
              ) -> dict[str, Any]:
    memory.reset()
    device, cfg = settings.device, ours_config(settings)
    objective = build_objective(case, len(labels), settings.options, settings.batch_size, settings.seed)
    objective = objective.to(device).train()
    guard = speed.prepare([objective.student, objective.teacher], cfg, device)  # channels-last, compile
    params = [*objective.student.parameters(), *objective.method.main_parameters()]
    optimizer = sgd(params, default_lr(case.student), 0.9, 5e-4, device)
    loader = _ours_loader(case, images, labels, cfg, device)
    autocast = speed.autocast_factory(cfg, device)
    memory_format = torch.channels_last if speed.use_channels_last(cfg, device) else torch.contiguous_format
    total = torch.zeros((), device=device)

    def step(batch: dict[str, Tensor]) -> None:
        batch = to_device(batch, device)  # no-op for device-resident batches; non_blocking from pinned workers
        batch["image"] = batch["image"].contiguous(memory_format=memory_format)
        total.add_(fast_step(objective, optimizer, batch, autocast).float())

    batches = endless(loader)
    with speed.backends(cfg, device) as backend_facts:
        seconds = _time(step, batches, settings, before_timing=total.zero_)
    batches.close()
    loss = total.item() / settings.steps  # the one host sync of the pipeline
    peak = memory.read_mb()
    compiled = "off" if guard is None else "on" if guard.fell_back is None else f"fell back to eager: {guard.fell_back}"
    return {"images_per_s": settings.steps * settings.batch_size / seconds, "peak_mb": peak, "loss": loss,
            "compile": compiled, "loader_images_per_s": _loader_rate(loader, settings),
            "data_path": "device" if loader.__class__ is DeviceLoader else "cpu",
            "amp": "bf16" if speed.amp_enabled(cfg, device) else "off",
            "channels_last": memory_format is torch.channels_last,
            "cudnn_benchmark": backend_facts["cudnn_benchmark"],
            "optimizer": "fused SGD" if optimizer.defaults.get("fused") else "torch's default SGD"}


def run_bench(pairs: Iterable[str | Sequence[str] | Case] | None = None, methods: Sequence[str] | None = None,
              batch_size: int = 64, steps: int = 50, warmup: int = 10, device: str = "auto", data_path: str = "auto",
              amp: str = "auto", channels_last: str = "auto", compile: bool = False, deterministic: bool = False, *,
              num_images: int = 50000, workers: int | None = None, nce_k: int = 16384, seed: int = 0,
              log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Benchmark every case with the seed's pipeline and ours; one row (a dict) per case, in order.

    "Ours" is what ``distill`` runs with the same flags (``--data-path``, ``--amp``, ``--channels-last``,
    ``--compile``, ``--deterministic``): the same ``engine.speed`` choices, loaders and optimiser builder; each row
    records what was chosen. ``workers`` (DataLoader processes of both pipelines) defaults to RepDistiller's 8,
    capped at the CPU count.
    """
    for flag, value, low in (("--batch-size", batch_size, 1), ("--steps", steps, 1), ("--warmup", warmup, 0),
                             ("--num-images", num_images, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{flag} must be an integer >= {low}, got {value!r}")
    if num_images < batch_size:
        raise UserError(f"--num-images {num_images} is smaller than --batch-size {batch_size}; raise --num-images")
    cases = resolve_cases(pairs, methods)
    torch_device = resolve_device(device)
    log = log or (lambda text: None)
    settings = Settings(batch_size, steps, warmup, torch_device, data_path, amp, channels_last, compile,
                        deterministic, min(8, os.cpu_count() or 1) if workers is None else workers, seed,
                        MethodOptions(nce_k=nce_k))
    speed.data_path(ours_config(settings))  # an unknown --data-path is refused before any work
    images, labels = synthetic_cifar(num_images, NUM_CLASSES, seed)
    memory = PeakMemory(torch_device)
    machine = describe_machine(torch_device)
    rows = []
    for case in cases:
        log(f"{case.label} {case.method}: seed pipeline ...")
        seed_result = _run_seed(case, images, labels, settings, memory)
        _release(torch_device)
        log(f"{case.label} {case.method}: ours ...")
        ours = _run_ours(case, images, labels, settings, memory)
        _release(torch_device)
        rows.append({
            "teacher": case.teacher, "student": case.student, "method": case.method,
            "batch_size": batch_size, "steps": steps, "warmup": warmup, "num_images": num_images,
            "device": torch_device.type, "machine": machine, "workers": settings.workers, "load": _load(),
            **{key: ours[key] for key in ("data_path", "amp", "channels_last", "compile", "cudnn_benchmark",
                                          "optimizer")},
            "deterministic": deterministic,
            "seed_images_per_s": seed_result["images_per_s"], "ours_images_per_s": ours["images_per_s"],
            "speedup": ours["images_per_s"] / seed_result["images_per_s"],
            "seed_loader_images_per_s": seed_result["loader_images_per_s"],
            "ours_loader_images_per_s": ours["loader_images_per_s"],
            "seed_peak_mb": seed_result["peak_mb"], "ours_peak_mb": ours["peak_mb"], "memory": memory.kind,
            "seed_loss": seed_result["loss"], "ours_loss": ours["loss"],
        })
        log(format_table(rows[-1:], header=False))
    return rows


def _load() -> str:
    """The 1/5/15-minute load averages when the row was measured (the machine may be shared)."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe_machine(device: torch.device) -> str:
    """The hardware and software a row was measured on, for ``docs/benchmarks.md``."""
    if device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        model = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as handle:
                model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                             model)
        except OSError:
            pass
        hardware = f"{model}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
    return f"{hardware}; torch {torch.__version__}"


def describe_choices(row: dict[str, Any]) -> str:
    """The fast-path configuration a row ran (``engine.speed``'s answers), on one line."""
    return (f"data path {row['data_path']} ({row['workers']} workers if cpu), amp {row['amp']}, channels-last "
            f"{'on' if row['channels_last'] else 'off'}, compile {row['compile']}, cudnn.benchmark "
            f"{'on' if row['cudnn_benchmark'] else 'off'}, deterministic {'on' if row['deterministic'] else 'off'}, "
            f"{row['optimizer']}")


def format_table(rows: Sequence[dict[str, Any]], header: bool = True) -> str:
    """A markdown table of ``run_bench`` rows (plus the machine and settings line when ``header``)."""
    lines = []
    if header and rows:
        first = rows[0]
        lines += [f"machine: {first['machine']}; load average {first['load']}",
                  f"batch {first['batch_size']}, {first['steps']} timed steps after {first['warmup']} warm-up, "
                  f"{first['num_images']} synthetic images; seed: {first['workers']} PIL workers, float32, "
                  f"item() per step; memory: {first['memory']}",
                  f"ours = what distill chooses with these flags: {describe_choices(first)}", ""]
    lines += ["| teacher -> student | method | seed img/s | ours img/s | speedup | seed peak MB | ours peak MB | "
              "data only: seed img/s | data only: ours img/s | compile |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['teacher']} -> {row['student']} | {row['method']} | {row['seed_images_per_s']:.1f} | "
                     f"{row['ours_images_per_s']:.1f} | {row['speedup']:.2f}x | {row['seed_peak_mb']:.0f} | "
                     f"{row['ours_peak_mb']:.0f} | {row['seed_loader_images_per_s']:.0f} | "
                     f"{row['ours_loader_images_per_s']:.0f} | {row['compile']} |")
    return "\n".join(lines)
