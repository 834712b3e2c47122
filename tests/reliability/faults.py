"""Faults injected into a forked ``distillers`` child (``harness.spawn(..., patch=...)``), at exact moments.

Each function returns a patch: a callable the child runs before ``main``. Patches only wrap public seams
(``RunLogger.epoch``, an objective's ``forward``, the file object a checkpoint is written through), so the
code under test runs unchanged around them.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Patch = Callable[[], None]


def signal_after_epoch(stage: str, epoch: int, sig: int) -> Patch:
    """Send ``sig`` to the process itself right after epoch ``epoch`` of ``stage`` is logged."""

    def patch() -> None:
        from distillers.engine.logging import RunLogger

        log_epoch = RunLogger.epoch

        def log_then_signal(self: RunLogger, record: dict) -> None:
            log_epoch(self, record)
            if (record.get("stage", "main"), record["epoch"]) == (stage, epoch):
                os.kill(os.getpid(), sig)

        RunLogger.epoch = log_then_signal

    return patch


def _on_training_step(step: int, action: Callable[[dict[str, Any]], None]) -> Patch:
    """Run ``action(terms)`` inside the ``step``-th training forward (1-based, counted over the whole run)."""

    def patch() -> None:
        from distillers.objective import Supervised

        forward = Supervised.forward
        calls = 0

        def counted(self: Supervised, batch: dict) -> Any:
            nonlocal calls
            logits, terms = forward(self, batch)
            if self.training:
                calls += 1
                if calls == step:
                    action(terms)
            return logits, terms

        Supervised.forward = counted

    return patch


def signal_during_step(step: int, sig: int, times: int = 1) -> Patch:
    """Send ``sig`` (``times`` times) to the process itself in the middle of training step ``step``."""

    def action(terms: dict) -> None:
        for _ in range(times):
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # let the handler run before the next signal

    return _on_training_step(step, action)


def nan_loss_at_step(step: int) -> Patch:
    """Make the loss of training step ``step`` NaN (as an overflowing model would)."""

    def action(terms: dict) -> None:
        for name in terms:
            terms[name] = terms[name] * float("nan")

    return _on_training_step(step, action)


class _FaultyFile:
    """A binary file whose first ``write`` stores half the bytes, then calls ``fault`` (which sleeps or raises)."""

    def __init__(self, handle: Any, fault: Callable[[], None]) -> None:
        self._handle = handle
        self._fault = fault

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._handle.write(view[: len(view) // 2])
        self._handle.flush()
        self._fault()
        return self._handle.write(view[len(view) // 2:]) + len(view) // 2

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _on_checkpoint_write(name: str, nth: int, fault: Callable[[], None]) -> Patch:
    """Call ``fault`` half-way through the ``nth`` write of checkpoint ``name`` (its temporary ``.name.*`` file)."""

    def patch() -> None:
        fdopen = os.fdopen
        count = 0

        def watched(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            handle = fdopen(fd, mode, *args, **kwargs)
            if "w" in mode and "b" in mode and Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
                count += 1
                if count == nth:
                    return _FaultyFile(handle, fault)
            return handle

        os.fdopen = watched

    return patch


def stall_checkpoint_write(name: str, nth: int, marker: Path) -> Patch:
    """Freeze half-way through the ``nth`` write of ``name`` (creating ``marker`` then), to be killed there."""

    def stall() -> None:
        Path(marker).touch()
        time.sleep(600)

    return _on_checkpoint_write(name, nth, stall)


def disk_full_during_checkpoint_write(name: str, nth: int) -> Patch:
    """The disk fills half-way through the ``nth`` write of ``name``: the write raises ENOSPC."""

    def full() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return _on_checkpoint_write(name, nth, full)
