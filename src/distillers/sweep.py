"""The grid of runs that fills the seed's tables: print it, run it, skip what finished, resume what did not."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from distillers.errors import UserError
from distillers.methods import METHODS
from distillers.models import MODELS
from distillers.rundir import LAST, SUMMARY, distill_run_name, read_json, teacher_run_name
from distillers.seed_grid import SEED_METHODS  # noqa: F401  (re-exported: the CLI's default rows)
from distillers.seed_grid import SEED_PAIR_ARGS as SEED_PAIRS  # the seed's pairs as --pairs items


@dataclass(frozen=True)
class PlannedRun:
    name: str
    argv: tuple[str, ...]  # arguments of the `distillers` command

    @property
    def command(self) -> str:
        return "distillers " + shlex.join(self.argv)


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    parsed = []
    for text in pairs:
        teacher, sep, student = text.partition(":")
        if not sep:
            raise UserError(f"--pairs takes TEACHER:STUDENT items (e.g. resnet32x4:resnet8x4), got {text!r}")
        parsed.append((MODELS.canonical(teacher), MODELS.canonical(student)))
    return parsed


def plan(pairs: Sequence[str], methods: Sequence[str], trials: int, teacher_dir: str, out: str, dataset: str,
         extra: Sequence[str] = (), baselines: bool = False) -> list[PlannedRun]:
    """Every run of the grid, in table order; ``method+kd`` adds KD with ``-a 1`` as the seed's X+KD rows."""
    runs: list[PlannedRun] = []
    parsed = parse_pairs(pairs)
    if baselines:  # student baselines for the tables' header row, trained from scratch like the seed's
        for student in dict.fromkeys(student for _, student in parsed):
            for trial in range(1, trials + 1):
                name = teacher_run_name(student, dataset, trial)
                runs.append(PlannedRun(name, ("train-teacher", "--model", student, "--dataset", dataset, "--trial",
                                              str(trial), "--out", out, *extra)))
    for teacher, student in parsed:
        teacher_path = str(Path(teacher_dir) / f"{teacher}_vanilla" / "ckpt_epoch_240.pth")
        for label in methods:
            method_name, plus, kd = label.lower().partition("+")
            if plus and kd != "kd":
                raise UserError(f"unknown method combination {label!r}; use METHOD or METHOD+kd")
            cls = METHODS.get(method_name)
            gamma, alpha, beta = cls.weights.gamma, (1.0 if plus else cls.weights.alpha), cls.weights.beta
            for trial in range(1, trials + 1):
                name = distill_run_name(student, teacher, dataset, cls.name, gamma, alpha, beta, trial)
                runs.append(PlannedRun(name, ("distill", "--teacher", teacher_path, "--student", student, "--method",
                                              cls.name, "-r", f"{gamma:g}", "-a", f"{alpha:g}", "-b", f"{beta:g}",
                                              "--trial", str(trial), "--dataset", dataset, "--out", out, *extra)))
    return runs


def state_of(run: PlannedRun, out: str) -> str:
    """``finished``, ``resume`` (a checkpoint exists) or ``new``."""
    run_dir = Path(out) / run.name
    if (run_dir / SUMMARY).exists() and read_json(run_dir / SUMMARY).get("status") == "finished":
        return "finished"
    return "resume" if (run_dir / LAST).exists() else "new"


def sweep(pairs: Sequence[str], methods: Sequence[str], trials: int, teacher_dir: str, out: str, dataset: str,
          dry_run: bool, extra: Sequence[str] = (), baselines: bool = False) -> int:
    """Print or run the grid; returns the number of failed runs. Ends with the report of ``out``."""
    from distillers import cli

    runs = plan(pairs, methods, trials, teacher_dir, out, dataset, extra, baselines)
    failed = 0
    for index, run in enumerate(runs, 1):
        state = state_of(run, out)
        argv = list(run.argv) + (["--resume"] if state == "resume" else [])
        prefix = f"[{index}/{len(runs)}]"
        if state == "finished":
            print(f"{prefix} skip (finished): {run.name}")
            continue
        print(f"{prefix} {'resume' if state == 'resume' else 'run'}: distillers {shlex.join(argv)}", flush=True)
        if not dry_run and cli.main(argv) != 0:
            failed += 1
    if not dry_run and Path(out).is_dir():
        from distillers.reporting import write_report

        try:
            print(write_report([out], "markdown", None, "last", True, None))
        except UserError as error:
            print(f"no report: {error}")
    return failed
