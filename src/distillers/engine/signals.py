"""Stop signals: SIGINT, SIGTERM (schedulers) and SIGUSR2 (SLURM's warning before a time limit or preemption)
become a request that the training loop honours at the next step boundary, with a checkpoint."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from typing import Any

from distillers.errors import UserError

STOP_SIGNALS = tuple(sig for sig in (getattr(signal, name, None) for name in ("SIGINT", "SIGTERM", "SIGUSR2")) if sig)
# The shell's convention: a process ended by signal N exits with 128 + N.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(Exception):
    """Raised by the loop after a stop signal, once a checkpoint is saved at a step boundary."""


class RunInterrupted(UserError):
    """A run stopped by a signal; ``signal`` names it, so launchers can requeue (and the CLI says how to resume)."""

    def __init__(self, message: str, signal_name: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.signal = signal_name
        self.exit_code = exit_code


class StopSignals:
    """Turns stop signals into a flag the loop checks at step boundaries (a second signal aborts at once).

    ``echo_s``: a second signal this soon after the first is the same request delivered twice (Ctrl-C reaches
    every process of torchrun's group from the terminal, and torchrun forwards it again), not a second one.
    """

    def __init__(self, echo_s: float = 0.0) -> None:
        self.requested: str | None = None
        self.echo_s = echo_s
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            if time.monotonic() - self._at < self.echo_s:
                return
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._at = time.monotonic()

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class EarlyStop(BaseException):
    """A stop signal before the training loop: nothing to checkpoint yet, so the run ends at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_at_once() -> Iterator[None]:
    """While data loads and models are built, a stop signal ends the run immediately (as ``EarlyStop``) rather than
    meeting Python's default handlers halfway through writing the run directory."""
    def handle(signum: int, frame: Any) -> None:
        raise EarlyStop(signum)

    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handle)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
