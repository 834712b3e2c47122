"""Run the real ``distillers`` command line in child processes, and read what a user would see.

Two ways to start a command:

- ``spawn``/``run`` fork this interpreter, which has already imported torch, torchvision and distillers, and run
  ``distillers.cli.main(argv)`` in the child with its own stdout/stderr files, working directory and default
  signal handlers. The child is a real process (real exit code, real signals, real files) that skips the 10-20 s
  of imports a fresh interpreter pays on a busy 2-core machine, which keeps the suite within its time budget.
  A ``patch`` callable runs in the child first: the way to inject a fault (a slow or failing disk write, a NaN).
- ``run_console_script`` runs the installed ``distillers`` entry point in a fresh interpreter, for the checks
  where the real process start matters (signals, untrusted pickles).

Torch computes only in children, each with one thread (a fork must not inherit a busy OpenMP pool, and one
thread is also the fastest setting on a shared 2-core machine) and without CUDA (``CUDA_VISIBLE_DEVICES=""``
for a fresh interpreter; ``torch.cuda.is_available`` answers False in a forked child). The parent's own
environment is left alone, so other test suites in the same session still see their GPU.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONSOLE_SCRIPT = Path(sys.executable).with_name("distillers")
ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ERROR_PREFIX = "distillers: error: "


def warm_imports() -> None:
    """Import, once in the parent, everything a command imports lazily, so forked children start instantly."""
    import safetensors.torch  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import distillers.cli  # noqa: F401
    import distillers.data  # noqa: F401
    import distillers.export  # noqa: F401
    import distillers.methods  # noqa: F401
    import distillers.models  # noqa: F401
    import distillers.tasks.distill  # noqa: F401
    import distillers.tasks.evaluate  # noqa: F401
    import distillers.tasks.teacher  # noqa: F401
    import distillers.tasks.transfer  # noqa: F401


@dataclass
class Outcome:
    """What a finished command left: exit code (negative: killed by that signal), stdout and stderr text."""

    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"exit code {self.code}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


class Child:
    """A running command: send it signals, wait for it, read its output so far."""

    def __init__(self, pid: int, stdout: Path, stderr: Path) -> None:
        self.pid = pid
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.outcome: Outcome | None = None

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def running(self) -> bool:
        return self._poll() is None

    def _poll(self) -> Outcome | None:
        if self.outcome is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.outcome = Outcome(os.waitstatus_to_exitcode(status), self.stdout_path.read_text(),
                                       self.stderr_path.read_text())
        return self.outcome

    def wait(self, timeout: float = 120.0) -> Outcome:
        """The outcome; a command still running after ``timeout`` seconds is killed and fails the test."""
        deadline = time.monotonic() + timeout
        while self._poll() is None:
            if time.monotonic() > deadline:
                self.send(signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"command still running after {timeout}s; stderr:\n{self.stderr_path.read_text()}")
            time.sleep(0.02)
        return self.outcome

    def wait_for(self, condition: Callable[[], bool], timeout: float = 120.0) -> None:
        """Poll until ``condition()`` holds; fail if the command ends first or the time runs out."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self._poll() is not None:
                raise AssertionError(f"command ended before the awaited moment:\n{self.outcome.describe()}")
            if time.monotonic() > deadline:
                self.send(signal.SIGKILL)
                self.wait()
                raise AssertionError(f"awaited moment not reached in {timeout}s:\n{self.outcome.describe()}")
            time.sleep(0.01)


_spawned = 0


def spawn(args: list[str], cwd: Path, patch: Callable[[], None] | None = None) -> Child:
    """Start ``distillers <args>`` in a forked child (see the module docstring); ``patch`` runs in it first."""
    global _spawned
    _spawned += 1
    logs = Path(cwd) / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / f"{_spawned}.out", logs / f"{_spawned}.err"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            code = _child_main(args, Path(cwd), stdout, stderr, patch)
        finally:
            os._exit(code)
    return Child(pid, stdout, stderr)


def _child_main(args: list[str], cwd: Path, stdout: Path, stderr: Path, patch: Callable[[], None] | None) -> int:
    """Be a fresh ``distillers`` process: own output files, default signal handling, then the real ``main``."""
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(0, closefd=False)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        import torch

        os.environ.update(ENV)  # for anything the command starts (data-loading workers)
        torch.cuda.is_available = lambda: False  # CPU only, even where the parent process has seen a GPU
        torch.set_num_threads(1)
        os.chdir(cwd)
        if patch is not None:
            patch()
        from distillers.cli import main

        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run(args: list[str], cwd: Path, patch: Callable[[], None] | None = None, timeout: float = 120.0) -> Outcome:
    """Run ``distillers <args>`` to completion in a forked child."""
    return spawn(args, cwd, patch).wait(timeout)


def start_console_script(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start the installed ``distillers`` entry point in a fresh interpreter (text pipes for its output)."""
    return subprocess.Popen([str(CONSOLE_SCRIPT), *args], cwd=cwd, env={**os.environ, **ENV}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll until ``condition()`` holds; fail if ``process`` ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"command ended before the awaited moment:\n{finish(process).describe()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"awaited moment not reached in {timeout}s:\n{finish(process).describe()}")
        time.sleep(0.01)


def finish(process: subprocess.Popen, timeout: float = 180.0) -> Outcome:
    stdout, stderr = process.communicate(timeout=timeout)
    return Outcome(process.returncode, stdout, stderr)


# ---- what a user sees ----------------------------------------------------------------------------------------
def assert_user_error(outcome: Outcome, *fragments: str, after_progress: bool = False) -> str:
    """Exit code 2, no traceback, and stderr is exactly one ``distillers: error: ...`` line holding every fragment.

    ``after_progress``: the run trained first, so its progress lines may precede the error, which comes last.
    """
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == 2, outcome.describe()
    assert "Traceback" not in outcome.stderr, outcome.describe()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    expected_lines = lines[-1:] if after_progress else lines
    assert len(errors) == 1 and errors == expected_lines, outcome.describe()
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in the error line:\n{errors[0]}"
    print(f"user sees: {errors[0]}")  # the report's list of messages: pytest -s tests/reliability
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file below ``root`` (but the harness logs) with a digest of its bytes: compare to prove nothing changed."""
    files = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and ".logs" not in path.relative_to(root).parts:
            files[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def assert_same_history(reference: Path, resumed: Path) -> None:
    """The resumed run logged exactly the reference's epochs and ended with exactly the same weights."""
    import torch

    def comparable(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in record.items() if k != "epoch_time_s"} for record in metrics(run_dir)]

    expected, actual = comparable(reference), comparable(resumed)
    assert [(r["stage"], r["epoch"]) for r in actual] == [(r["stage"], r["epoch"]) for r in expected]
    assert actual == expected  # bit for bit: same batches, augmentations, optimiser and method state
    assert summary(resumed)["status"] == "finished"
    assert summary(resumed)["last_acc"] == summary(reference)["last_acc"]
    weights = torch.load(reference / "last.pt", weights_only=True)["model"]
    resumed_weights = torch.load(resumed / "last.pt", weights_only=True)["model"]
    assert weights.keys() == resumed_weights.keys()
    assert all(torch.equal(weights[key], resumed_weights[key]) for key in weights)
