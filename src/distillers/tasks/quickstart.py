"""The offline quickstart: teacher, student, student+KD and student+ICD on scikit-learn's digits, on CPU.

It runs the real tasks (train-teacher and distill) on real data that ships with scikit-learn, so a new user sees
the whole pipeline work, and what distillation does, in a few minutes without a GPU or a download.
The student gets a short schedule (the setting where a teacher's soft targets help most), the teacher a longer
one; student results are averaged over seeds because a single short run is noisy.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from distillers.config import MethodOptions, RunConfig
from distillers.errors import UserError
from distillers.rundir import CONFIG, read_json


@dataclass(frozen=True)
class QuickstartPlan:
    teacher: str = "resnet20"
    student: str = "resnet8"
    teacher_epochs: int = 12
    student_epochs: int = 4
    seeds: tuple[int, ...] = (0, 1)
    batch_size: int = 64


def _config(out: Path, name: str, seed: int, epochs: int, plan: QuickstartPlan, **fields) -> RunConfig:
    decay = (max(1, int(epochs * 0.75)),)
    return RunConfig(dataset="digits", out=str(out), name=name, seed=seed, trial=seed + 1, epochs=epochs,
                     batch_size=plan.batch_size,
                     lr_decay_epochs=decay, workers=0, device="cpu", overwrite=True, save_freq=0,
                     method_options=MethodOptions(feat_dim=64), **fields)


def quickstart(out: str = "runs/quickstart", plan: QuickstartPlan = QuickstartPlan()) -> list[tuple[str, list[float]]]:
    """Train everything, print the comparison table, and return ``(row, accuracies)`` pairs."""
    from distillers.tasks import run_task

    started = time.perf_counter()
    root = Path(out)
    _refuse_foreign_runs(root, ["teacher"] + [f"{kind}_seed{seed}" for seed in plan.seeds
                                               for kind in ("student", "kd", "icd")])
    teacher = run_task(_config(root, "teacher", 0, plan.teacher_epochs, plan, task="teacher",
                                    model=plan.teacher))
    teacher_path = str(root / "teacher" / "best.pt")
    rows: dict[str, list[float]] = {f"student {plan.student} alone": [], "student + KD": [], "student + ICD": []}
    for seed in plan.seeds:
        alone = run_task(_config(root, f"student_seed{seed}", seed, plan.student_epochs, plan, task="teacher",
                                      model=plan.student))
        rows[f"student {plan.student} alone"].append(alone["last_acc"])
        for label, method, weights in (("student + KD", "kd", {"gamma": 0.1, "alpha": 0.9, "beta": 0.0}),
                                       ("student + ICD", "icd", {"gamma": 1.0, "alpha": 0.0, "beta": 1.0})):
            result = run_task(_config(root, f"{method}_seed{seed}", seed, plan.student_epochs, plan, task="distill",
                                     student=plan.student, teacher_path=teacher_path, method=method, **weights))
            rows[label].append(result["last_acc"])
    table = [(f"teacher {plan.teacher}", [teacher["best_acc"]])] + list(rows.items())
    print(render(table, plan, time.perf_counter() - started))
    return table


def _refuse_foreign_runs(root: Path, names: list[str]) -> None:
    """The quickstart replaces its own earlier runs, never a folder of the user's that happens to share a name."""
    for name in names:
        run_dir = root / name
        if not run_dir.is_dir() or not any(run_dir.iterdir()):
            continue
        try:
            ours = read_json(run_dir / CONFIG).get("dataset") == "digits"
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise UserError(f"{run_dir} holds something other than a quickstart run, which the quickstart would "
                            f"replace; choose another --out")


def render(table: list[tuple[str, list[float]]], plan: QuickstartPlan, seconds: float) -> str:
    lines = ["", (f"digits (scikit-learn, 1438 train / 359 test, 32x32), CPU; teacher {plan.teacher_epochs} epochs, "
                  f"students {plan.student_epochs} epochs x seeds {list(plan.seeds)}; test top-1 (last epoch, teacher: "
                  f"best checkpoint)"),
             f"{'run':28s} {'top-1 %':>8s} {'± std':>7s}  per seed"]
    for label, values in table:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(f"{label:28s} {statistics.mean(values):8.2f} {spread:7.2f}  "
                     + " ".join(f"{v:.2f}" for v in values))
    lines.append(lift_line(table))
    lines.append(f"quickstart finished in {seconds:.0f}s; run directories under the output folder "
                 f"(try `distillers report` on it)")
    return "\n".join(lines)


def lift_line(table: list[tuple[str, list[float]]]) -> str:
    """What the table says about distillation, and whether the seeds' spread is small enough to say it.

    The numbers themselves differ between machines (float rounding of other CPU kernels and thread counts takes a
    short run elsewhere), so the line compares the lift with the spread measured in this very run.
    """
    alone = table[1][1]
    spread = max((statistics.stdev(values) for _, values in table[1:] if len(values) > 1), default=0.0)
    lifts = [(label.replace("student + ", ""), statistics.mean(values) - statistics.mean(alone))
             for label, values in table[2:]]
    wins = [sum(ours > theirs for ours, theirs in zip(values, alone)) for _, values in table[2:]]
    shown = ", ".join(f"{name} {lift:+.2f} (above it in {won}/{len(alone)} seeds)"
                      for (name, lift), won in zip(lifts, wins))
    if not all(lift > spread for _, lift in lifts):
        return (f"lift over the student alone (points): {shown}; NOT larger than the largest seed std {spread:.2f}: "
                f"rerun with more --seeds before reading the table")
    gap = max(lift for _, lift in lifts) - min(lift for _, lift in lifts)
    order = ("; the methods' order is within that spread: do not read a winner" if gap < spread else "")
    return f"lift over the student alone (points): {shown}; larger than the largest seed std {spread:.2f}{order}"
