"""The fast path's choices, made once per run: where batches come from, autocast, channels-last, compile, backends.

Every choice runs on CPU when asked (so CI executes it), and ``auto`` means what ``distillers bench`` measured faster
(``docs/benchmarks.md``), never an assumption. What only CUDA can execute is named there.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from distillers.config import RunConfig
from distillers.data.gpu_loader import DATA_PATH_ALIASES, DATA_PATHS
from distillers.data.loaders import DataInfo
from distillers.errors import UserError

# ``--data-path auto`` / ``--amp auto`` / ``--channels-last auto`` on CPU: the winners `distillers bench --device
# cpu` measured for CIFAR-sized data (docs/benchmarks.md, "CPU"). On CUDA auto means device data (when it fits on
# every rank), bf16 (when the GPU has it natively) and channels-last.
CPU_AUTO = {"data_path": "device", "amp": False, "channels_last": True}
COMPILE_BACKEND = "inductor"  # torch.compile's default; tests swap in a failing backend
CUBLAS_WORKSPACE = ":4096:8"  # what torch.use_deterministic_algorithms needs for cuBLAS (CUDA >= 10.2)


def data_path(cfg: RunConfig) -> str:
    """``--data-path`` with aliases resolved (``gpu`` -> ``device``); an unknown value is a user error."""
    name = DATA_PATH_ALIASES.get(cfg.data_path, cfg.data_path)
    if name not in DATA_PATHS:
        raise UserError(f"unknown --data-path {cfg.data_path!r}; choose one of: {', '.join(DATA_PATHS)}")
    return name


def _fits_on_every_rank(fits: bool, device: torch.device) -> bool:
    """One answer for all processes: device data only when every rank has room (each sees its own free memory)."""
    from distillers.engine import distributed

    if distributed.world_size() == 1:
        return fits
    where = device if device.type == "cuda" and torch.cuda.is_available() else torch.device("cpu")
    misses = distributed.all_max(torch.tensor(0.0 if fits else 1.0, device=where))
    return float(misses) == 0.0


def use_device_data(cfg: RunConfig, train_set: Any, device: torch.device) -> bool:
    """``--data-path``: keep CIFAR-sized uint8 arrays on the training device and augment there.

    Not for datasets stored at another size (STL-10, TinyImageNet resize) nor for the strong view (CPU RandAugment).
    ``auto``: on CUDA when the data fit (on every rank), on CPU the measured winner ``CPU_AUTO["data_path"]``.
    """
    from distillers.data.gpu_loader import array_source, fits_on_device

    path = data_path(cfg)
    if path == "cpu":
        return False
    why_not = None
    if cfg.augment == "strong":
        why_not = "--augment strong builds its second view with CPU transforms"
    elif array_source(train_set) is None:
        why_not = f"{cfg.dataset} is not held as one uint8 array of the model's input size"
    elif path == "auto":
        if device.type == "cuda":
            return _fits_on_every_rank(fits_on_device(train_set, device), device)
        return device.type == "cpu" and CPU_AUTO["data_path"] == "device"
    if why_not is not None:
        if path == "device":
            raise UserError(f"--data-path {cfg.data_path} is not possible: {why_not}; use --data-path cpu or auto")
        return False
    return True


def train_loader(cfg: RunConfig, train_set: Any, info: DataInfo, device: torch.device, default_loader: Any) -> Any:
    """The device-resident loader when chosen, else the DataLoader the task built."""
    if not use_device_data(cfg, train_set, device):
        return default_loader
    from distillers.data import DATASETS
    from distillers.data.gpu_loader import DeviceLoader
    from distillers.engine import distributed

    spec = DATASETS.get(cfg.dataset)
    node = distributed.current()  # each process keeps the whole dataset and takes its shard of every epoch
    return DeviceLoader.from_dataset(train_set, cfg.batch_size, device=device, mean=info.mean, std=info.std,
                                     seed=cfg.seed, rank=node.rank, world_size=node.world_size,
                                     padding=spec.padding, flip=spec.flip,
                                     channels_last=use_channels_last(cfg, device))


# ---- autocast ---------------------------------------------------------------------------------------------------
def supports_bf16(device: torch.device) -> bool:
    """Native bfloat16 on ``device``: Ampere or newer on CUDA (emulated bf16 on V100/T4 does not count); any CPU."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"


def amp_dtype(cfg: RunConfig, device: torch.device) -> torch.dtype | None:
    """``--amp``: the autocast dtype (bf16) or None. ``on`` works on CPU too; ``auto`` is on for GPUs with native
    bf16 and, on CPU, the measured winner ``CPU_AUTO["amp"]``."""
    if cfg.amp not in ("auto", "on", "off"):
        raise UserError(f"unknown --amp {cfg.amp!r}; choose auto, on or off")
    if cfg.amp == "off":
        return None
    native = supports_bf16(device)
    if cfg.amp == "on" and not native:
        raise UserError(f"--amp on needs native bfloat16 on {device} (a GPU of the Ampere generation or newer, or "
                        f"the CPU); use --amp auto or off")
    if cfg.amp == "auto" and (not native or (device.type == "cpu" and not CPU_AUTO["amp"])):
        return None
    return torch.bfloat16


def amp_enabled(cfg: RunConfig, device: torch.device) -> bool:
    """Whether the run trains under bf16 autocast (see ``amp_dtype``)."""
    return amp_dtype(cfg, device) is not None


def autocast_factory(cfg: RunConfig, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """What the Trainer enters around every forward: ``torch.autocast`` on ``device`` (CPU too) or a null context."""
    dtype = amp_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# ---- memory format and compile ----------------------------------------------------------------------------------
def use_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """``--channels-last``: NHWC activations; ``auto`` on CUDA (faster convolutions), on CPU the measured winner."""
    value = cfg.channels_last
    if value is True or value == "on":
        return True
    if value is False or value == "off":
        return False
    if value != "auto":
        raise UserError(f"unknown --channels-last {value!r}; choose auto, on or off")
    return device.type == "cuda" or (device.type == "cpu" and CPU_AUTO["channels_last"])


class CompileGuard:
    """Shared by the models one ``compile_models`` call compiled: the first failure sends them all back to eager.

    ``torch.compile`` returns at once and compiles at the first call (and again when shapes or modes change), so
    the fallback has to wrap the calls, not the ``torch.compile`` line.
    """

    def __init__(self) -> None:
        self.fell_back: str | None = None  # why, once it happened
        self.restores: list[Callable[[], None]] = []

    def fall_back(self, error: BaseException) -> None:
        from distillers.data.base import one_line
        from distillers.engine import distributed

        why = one_line(error).split(" Set TORCHDYNAMO_VERBOSE")[0]  # torch's advice on debugging dynamo itself
        self.fell_back = f"{type(error).__name__}: {why}"
        for restore in self.restores:
            restore()
        if distributed.current().is_main:
            print(f"--compile: compilation fell back to eager ({self.fell_back[:300]})", file=sys.stderr, flush=True)


def _guard(model: nn.Module, guard: CompileGuard) -> None:
    had_own = "forward" in model.__dict__
    eager = model.forward
    compiled = torch.compile(eager, backend=COMPILE_BACKEND)

    def restore() -> None:
        if had_own:
            model.forward = eager
        else:
            model.__dict__.pop("forward", None)

    def forward(*args: Any, **kwargs: Any) -> Any:
        if guard.fell_back is not None:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as error:  # compilation is an optimisation: a failing backend must not fail the run
            result = eager(*args, **kwargs)  # a genuine error in the model raises here, as it would without compile
            guard.fall_back(error)
            return result

    guard.restores.append(restore)
    model.forward = forward  # an instance attribute: parameter names and state_dict keys stay as they are


def compile_models(models: list[nn.Module], cfg: RunConfig) -> CompileGuard | None:
    """``--compile``: compile each model's forward, with an eager fallback that really triggers (one line, once)."""
    if not cfg.compile:
        return None
    guard = CompileGuard()
    for model in models:
        _guard(model, guard)
    return guard


def prepare(models: list[nn.Module], cfg: RunConfig, device: torch.device) -> CompileGuard | None:
    """channels-last memory format (``use_channels_last``), then ``--compile`` with its eager fallback."""
    if use_channels_last(cfg, device):
        for model in models:
            model.to(memory_format=torch.channels_last)
    return compile_models(models, cfg)


# ---- backends ----------------------------------------------------------------------------------------------
def configure_backends(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """cuDNN autotuning on CUDA unless ``--deterministic``; ``--deterministic``: deterministic cuDNN and
    ``torch.use_deterministic_algorithms(True)`` (with the cuBLAS workspace it needs). Returns the facts for
    config.json. Process-wide settings: ``backends`` restores them afterwards."""
    deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts
    torch.use_deterministic_algorithms(deterministic)
    return {"cudnn_benchmark": torch.backends.cudnn.benchmark, "deterministic": deterministic,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if deterministic else None}


@contextlib.contextmanager
def backends(cfg: RunConfig, device: torch.device) -> Iterator[dict[str, Any]]:
    """``configure_backends`` for the length of a run; the previous process-wide settings come back after it."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        yield configure_backends(cfg, device)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]

