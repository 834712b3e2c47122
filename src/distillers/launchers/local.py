"""The local launcher: the sweep's runs on this machine, one after another in this process (the default), N at a time
in subprocesses (``--parallel N``), or one per GPU (``--gpus 0,1,2,3``, each run seeing only its GPU through
CUDA_VISIBLE_DEVICES). A run's failure never stops the others; Ctrl-C stops every run at a checkpoint."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from distillers.cli.arguments import positive_int
from distillers.errors import UserError
from distillers.launchers.registry import LAUNCHERS, Launcher, PlannedRun, run_state
from distillers.rundir import SUMMARY, read_json, write_json_atomic

POLL_S = 0.3


def gpu_list(text: str) -> tuple[str, ...]:
    """``0,1,2,3`` -> ('0', '1', '2', '3'): the devices to hand out, one run on each."""
    gpus = tuple(part.strip() for part in text.split(","))
    if not gpus or not all(gpus) or any(" " in gpu for gpu in gpus):
        raise argparse.ArgumentTypeError(f"expected comma-separated GPU indices such as 0,1,2,3, got {text!r}")
    return gpus


def failure_line(run: PlannedRun, log: Path | None = None) -> str:
    """The last line of why a run failed: summary.json's ``reason``, else the last line of its log."""
    try:
        reason = str(read_json(run.run_dir / SUMMARY).get("reason") or "")
    except (OSError, ValueError):
        reason = ""
    if not reason and log is not None and log.exists():
        reason = next((line for line in reversed(log.read_text(errors="replace").splitlines()) if line.strip()), "")
    line = reason.strip().splitlines()[-1] if reason.strip() else "no reason recorded"
    return line.removeprefix("distillers: error: ")


@LAUNCHERS.register("local")
class LocalLauncher(Launcher):
    """Runs on this machine; see the module docstring."""

    name = "local"
    flags = (("parallel", "--parallel"), ("gpus", "--gpus"))

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("--launcher local (the default): runs on this machine")
        group.add_argument("--parallel", type=positive_int, default=None, metavar="N",
                           help="N runs at a time, each in its own process (default: one after another here)")
        group.add_argument("--gpus", type=gpu_list, default=None, metavar="LIST",
                           help="one run per GPU at a time, e.g. 0,1,2,3 (sets CUDA_VISIBLE_DEVICES for each run)")

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        if args.parallel and args.gpus:
            raise UserError("--parallel and --gpus both set how many runs go at once: give one of them")
        self.slots: list[str | None] = list(args.gpus) if args.gpus else [None] * (args.parallel or 0)

    def launch(self, runs: list[PlannedRun], out: Path) -> dict[str, str]:
        if self.slots:
            self._parallel(runs, out)
        else:
            self._sequential(runs)
        return {}

    def _sequential(self, runs: list[PlannedRun]) -> None:
        """In this process, as the CLI runs one; a stop signal ends the sweep with the run's checkpoint saved."""
        from distillers.engine.signals import RunInterrupted
        from distillers.tasks import run_task

        for index, run in enumerate(runs, 1):
            print(f"[{index}/{len(runs)}] start: {run.name}", flush=True)
            try:
                run_task(run.cfg)
            except RunInterrupted as stop:
                raise interrupted(f"sweep interrupted by {stop.signal} during {run.name} (its checkpoint is saved); "
                                  f"run the same sweep command again to go on: finished runs are skipped, this one "
                                  f"resumes", stop.exit_code) from None
            except UserError as error:
                self.errors[run.name] = str(error)
                print(f"[{index}/{len(runs)}] failed: {run.name}: {error}", flush=True)
            except Exception as error:  # noqa: BLE001  a crash of one run (a bug, out of memory) must not end the sweep
                traceback.print_exc()
                self.errors[run.name] = f"{type(error).__name__}: {error}"
                print(f"[{index}/{len(runs)}] failed: {run.name}: {self.errors[run.name]}", flush=True)

    def _parallel(self, runs: list[PlannedRun], out: Path) -> None:
        """Up to ``len(self.slots)`` worker processes at once; each writes ``OUT/.local/<run>.log``."""
        folder = out / ".local"
        folder.mkdir(parents=True, exist_ok=True)
        pending = list(enumerate(runs, 1))
        free = list(self.slots)
        running: dict[subprocess.Popen, tuple[int, PlannedRun, str | None, TextIO]] = {}
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            while pending or running:
                while pending and free:
                    index, run = pending.pop(0)
                    slot = free.pop(0)
                    process, log = self._start(run, folder, slot)
                    running[process] = (index, run, slot, log)
                    where = f" on GPU {slot}" if slot is not None else ""
                    print(f"[{index}/{len(runs)}] start{where}: {run.name}", flush=True)
                for process in [p for p in running if p.poll() is not None]:
                    index, run, slot, log = running.pop(process)
                    log.close()
                    free.append(slot)
                    self._report(index, len(runs), run, process.returncode, folder)
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            _stop_all(running)
            raise interrupted(f"sweep interrupted: {len(running)} running run(s) stopped at a checkpoint; run the "
                              f"same sweep command again to go on (finished runs are skipped, the others resume)",
                              130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _start(self, run: PlannedRun, folder: Path, slot: str | None) -> tuple[subprocess.Popen, TextIO]:
        config_path = folder / f"{run.name}.json"
        write_json_atomic(config_path, run.cfg.to_dict())
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        else:  # N processes on the CPU: share its cores instead of each starting a thread per core
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(self.slots))))
        log = open(folder / f"{run.name}.log", "a")  # noqa: SIM115  closed when the run ends (see _parallel)
        # A session of its own: Ctrl-C reaches this process only, which stops each run once (a second signal to a
        # run aborts it without a checkpoint).
        process = subprocess.Popen([sys.executable, "-m", "distillers.launchers", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return process, log

    def _report(self, index: int, total: int, run: PlannedRun, code: int, folder: Path) -> None:
        state = run_state(run.run_dir) if code == 0 else "failed"
        if state != "finished":
            self.errors[run.name] = failure_line(run, folder / f"{run.name}.log")
            print(f"[{index}/{total}] {state}: {run.name}: {self.errors[run.name]}", flush=True)
        else:
            print(f"[{index}/{total}] finished: {run.name}", flush=True)


def interrupted(message: str, exit_code: int) -> UserError:
    """The sweep's one line after a stop signal, with the shell's exit code for it (130 for Ctrl-C)."""
    error = UserError(message)
    error.exit_code = exit_code
    return error


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_all(running: dict[subprocess.Popen, Any], wait_s: float = 120.0) -> None:
    """SIGTERM to every run once (each saves a checkpoint at its next step), then wait for them to exit."""
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
