"""The grid of runs that fills the seed's tables: print it, run or submit it, skip what finished, resume what did not.

The grid is a list of RunConfigs, each derived from one base config (the flags after ``sweep --``, parsed once by the
CLI) with ``dataclasses.replace``; the command line beside each is for printing only. A launcher (``local``,
``slurm``; ``distillers.launchers``) runs them, and ``--status`` reads back where they stand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from distillers.config import MethodOptions, RunConfig
from distillers.errors import UserError
from distillers.launchers import LAUNCHERS, PlannedRun
from distillers.launchers.registry import check_foreign_flags, continued
from distillers.launchers.status import status_lines, write_record
from distillers.methods import METHODS
from distillers.models import MODELS
from distillers.rundir import LAST, SUMMARY, distill_run_name, read_json, teacher_run_name
from distillers.seed_grid import SEED_METHODS  # re-exported: the CLI's default rows
from distillers.seed_grid import SEED_PAIR_ARGS as SEED_PAIRS  # the seed's pairs as --pairs items

__all__ = ["SEED_METHODS", "SEED_PAIRS", "PlannedRun", "parse_pairs", "plan", "run_sweep", "state_of"]

# Flags that name a run: the sweep sets them for every run, so after `--` they would be overridden.
SWEEP_OWNED = ("--out", "--name", "--trial", "--dataset", "--resume", "--overwrite")


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    parsed = []
    for text in pairs:
        teacher, sep, student = text.partition(":")
        if not sep:
            raise UserError(f"--pairs takes TEACHER:STUDENT items (e.g. resnet32x4:resnet8x4), got {text!r}")
        parsed.append((MODELS.canonical(teacher), MODELS.canonical(student)))
    return parsed


def check_extra(extra: Sequence[str]) -> None:
    """Flags after ``--`` go to every run; those the sweep sets per run are refused rather than silently lost."""
    owned = [flag for flag in extra if flag.split("=", 1)[0] in SWEEP_OWNED]
    if owned:
        raise UserError(f"{owned[0]} after -- would be overridden by the sweep, which names every run; use the "
                        f"sweep's own --out/--dataset/--trials instead")


def baseline_runs(students: Sequence[str], trials: int, out: str, dataset: str, base: RunConfig,
                  extra: Sequence[str]) -> list[PlannedRun]:
    """Students trained from scratch, for the tables' header row (as the seed's)."""
    runs = []
    for student in dict.fromkeys(students):
        for trial in range(1, trials + 1):
            name = teacher_run_name(student, dataset, trial)
            cfg = replace(base, task="teacher", model=student, student=None, teacher=None, teacher_path=None,
                          method=None, gamma=None, alpha=None, beta=None, method_options=MethodOptions(),
                          trial=str(trial), dataset=dataset, out=out, name=name)
            runs.append(PlannedRun(name, cfg, ("train-teacher", "--model", student, "--dataset", dataset, "--trial",
                                               str(trial), "--out", out, *extra)))
    return runs


def plan(pairs: Sequence[str], methods: Sequence[str], trials: int, teacher_dir: str, out: str, dataset: str,
         extra: Sequence[str] = (), baselines: bool = False, base: RunConfig | None = None) -> list[PlannedRun]:
    """Every run of the grid, in table order; ``method+kd`` adds KD with ``-a 1`` as the seed's X+KD rows.

    ``base``: the config the flags in ``extra`` make (the CLI parses them once); each run replaces its identity.
    """
    base = base if base is not None else RunConfig(task="distill")
    parsed = parse_pairs(pairs)
    runs = baseline_runs([s for _, s in parsed], trials, out, dataset, base, extra) if baselines else []
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
                cfg = replace(base, task="distill", teacher_path=teacher_path, student=student, method=cls.name,
                              gamma=gamma, alpha=alpha, beta=beta, trial=str(trial), dataset=dataset, out=out,
                              name=name)
                runs.append(PlannedRun(name, cfg, ("distill", "--teacher", teacher_path, "--student", student,
                                                   "--method", cls.name, "-r", f"{gamma:g}", "-a", f"{alpha:g}", "-b",
                                                   f"{beta:g}", "--trial", str(trial), "--dataset", dataset, "--out",
                                                   out, *extra)))
    return runs


def state_of(run: PlannedRun, out: str) -> str:
    """``finished``, ``resume`` (a checkpoint exists) or ``new``."""
    run_dir = Path(out) / run.name
    if (run_dir / SUMMARY).exists() and read_json(run_dir / SUMMARY).get("status") == "finished":
        return "finished"
    return "resume" if (run_dir / LAST).exists() else "new"


def pending_runs(runs: list[PlannedRun], out: str) -> list[PlannedRun]:
    """Print the grid (skip / run / resume, with each run's command) and return the runs still to do, each set to
    resume its checkpoint or to replace a directory whose run stopped before its first one."""
    todo = []
    for index, run in enumerate(runs, 1):
        state = state_of(run, out)
        prefix = f"[{index}/{len(runs)}]"
        if state == "finished":
            print(f"{prefix} skip (finished): {run.name}")
            continue
        cfg = continued(run.cfg, run.run_dir)
        flags = ("--resume",) if cfg.resume else ("--overwrite",) if cfg.overwrite else ()
        run = PlannedRun(run.name, cfg, run.argv + flags)
        print(f"{prefix} {'resume' if cfg.resume else 'run'}: {run.command}", flush=True)
        todo.append(run)
    return todo


def print_report(out: str) -> None:
    from distillers.reporting import write_report

    try:
        print(write_report([out], "markdown", None, "last", True, None))
    except UserError as error:
        print(f"no report: {error}")


def check_out(out: Path) -> None:
    """``--out`` must be a folder that exists or can be made: refused before anything is planned or written."""
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise UserError(f"--out {out} cannot hold run directories: {folder} is a file; choose another --out")
            return


def run_sweep(args: argparse.Namespace, base: RunConfig | None, extra: Sequence[str]) -> int:
    """``distillers sweep``: status, dry run, or launch (then the report, once the launcher has waited).

    Returns the exit code: 1 when a run it waited for did not finish.
    """
    if args.status is not None:
        print("\n".join(status_lines(Path(args.status))))
        return 0
    check_extra(extra)
    check_foreign_flags(args.launcher, args)
    check_out(Path(args.out))
    launcher = LAUNCHERS.get(args.launcher)(args)
    runs = plan(args.pairs or SEED_PAIRS, args.methods or SEED_METHODS, args.trials, args.teacher_dir, args.out,
                args.dataset, extra, args.baselines, base)
    todo = pending_runs(runs, args.out)
    if args.dry_run:
        return 0
    out = Path(args.out)
    if todo:
        launcher.prepare(out)
        write_record(out, args.launcher, todo, {})
        jobs = launcher.launch(todo, out)
        if jobs or launcher.errors:
            write_record(out, args.launcher, todo, jobs, launcher.errors)
        launcher.wait(out)
    if launcher.waited() and out.is_dir():
        print_report(args.out)
    failed = launcher.failed()
    if failed:
        print(f"sweep finished with {failed} failed run(s); see `distillers sweep --status {args.out}`",
              file=sys.stderr)
    return 1 if failed else 0
