"""The table model: method rows x teacher -> student columns of finished distillation runs, cells mean ± std (n).

Conventions (pinned by ``tests/test_report.py``):
  * a cell is the mean over finished trials with the sample std (ddof=1); one trial shows no std;
  * the best cell of a column is the highest mean *as displayed* (2 decimals), so ties are all marked;
  * baselines are the same metric of teacher-task runs of the teacher and of the student architecture;
  * a row is (method, protocol); runs of one row with different weights or epoch budgets become separate rows
    (suffix ``(r=.., a=.., b=.., N ep)``) instead of being averaged together;
  * published numbers are compared only with rows of the same protocol (``published.json`` names each one's).
Only finished runs are counted; unfinished ones are listed beside the table, and nothing is ever filled in that
no run produced.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distillers.errors import UserError
from distillers.reporting.names import method_rank
from distillers.reporting.published import Published, PublishedValue
from distillers.reporting.runs import DEFAULT_PROTOCOL, RunRecord, as_integer
from distillers.seed_grid import pair_rank

METRICS = ("last", "best")
MISSING = "—"


@dataclass
class Stat:
    """Mean and sample std (None for one value) of some accuracies."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


def format_stat(stat: Stat | None) -> str:
    """``75.48 ± 0.12 (3)``; one trial ``75.48 (1)``; no trial ``—``."""
    if stat is None:
        return MISSING
    spread = f" ± {stat.std:.2f}" if stat.std is not None else ""
    return f"{stat.mean:.2f}{spread} ({stat.n})"


def mean_of(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


def difference(ours: float | None, published: float | None) -> float | None:
    """Ours minus published, when both exist."""
    return None if ours is None or published is None else ours - published


@dataclass
class Cell:
    stat: Stat | None
    trials: list[Any] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    unfinished: int = 0  # runs of this cell that are not counted
    best: bool = False
    published: PublishedValue | None = None

    @property
    def diff(self) -> float | None:
        """Ours minus published, when both exist."""
        return difference(mean_of(self.stat), None if self.published is None else self.published.top1)


@dataclass
class Column:
    teacher: str
    student: str
    teacher_acc: Stat | None = None
    student_acc: Stat | None = None
    published_teacher: float | None = None
    published_student: float | None = None

    @property
    def label(self) -> str:
        return f"{self.teacher} → {self.student}"


@dataclass
class Row:
    label: str
    method: str
    protocol: str
    cells: list[Cell]


@dataclass
class Table:
    dataset: str
    metric: str
    columns: list[Column]
    rows: list[Row]
    published: bool = False
    unfinished: list[RunRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def trial_range(self) -> tuple[int, int]:
        counts = [cell.stat.n for row in self.rows for cell in row.cells if cell.stat is not None]
        return (min(counts), max(counts)) if counts else (0, 0)

    def column(self, teacher: str, student: str) -> int:
        """Index of a column; a UserError lists the pairs the table has."""
        for index, column in enumerate(self.columns):
            if (column.teacher, column.student) == (teacher, student):
                return index
        pairs = ", ".join(f"{c.teacher}->{c.student}" for c in self.columns)
        raise UserError(f"pair {teacher}->{student} is not in the table; choose one of: {pairs}")


def _setting(record: RunRecord) -> tuple:
    return (*record.weights, record.epochs)


def _setting_text(setting: tuple) -> str:
    gamma, alpha, beta, epochs = setting
    parts = [f"r={gamma:g}", f"a={alpha:g}", f"b={beta:g}"]
    if epochs is not None:
        parts.append(f"{epochs} ep")
    return "(" + ", ".join(parts) + ")"


def _stat(values: list[float]) -> Stat | None:
    return Stat(values) if values else None


def _trial_key(record: RunRecord) -> tuple:
    """Trials in numeric order (2 before 10), then the path."""
    trial = as_integer(record.trial)
    return (0, trial, str(record.path)) if trial is not None else (1, str(record.trial), str(record.path))


def _usable_runs(records: Sequence[RunRecord], dataset: str) -> tuple[list[RunRecord], list[str]]:
    """The distillation runs on ``dataset`` that name a method, student and teacher, and notes on the rest."""
    on_dataset = [r for r in records if r.dataset == dataset]
    notes = []
    usable = []
    for record in (r for r in on_dataset if r.task == "distill"):
        if record.method and record.model and record.teacher:
            usable.append(record)
        else:
            notes.append(f"skipped {record.path}: config.json lacks method, student or teacher")
    if not usable:
        datasets = sorted({r.dataset for r in records if r.task == "distill"})
        found = f" (distillation runs found on: {', '.join(datasets)})" if datasets else ""
        raise UserError(f"no distillation runs on {dataset} among {len(records)} runs{found}; pass their run "
                        f"directories")
    others = [r for r in on_dataset if r.task not in ("distill", "teacher")]
    if others:
        notes.append(f"{len(others)} {'/'.join(sorted({r.task for r in others}))} run(s) are not part of this table")
    return usable, notes


def build_table(records: Sequence[RunRecord], metric: str = "last", published: bool = False,
                dataset: str = "cifar100") -> Table:
    """Methods x teacher->student pairs of the distillation runs on ``dataset``, from finished runs only."""
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is not supported; choose one of: {', '.join(METRICS)}")
    usable, notes = _usable_runs(records, dataset)
    pairs = sorted({(r.teacher, r.model) for r in usable}, key=pair_rank)
    index = Published.load() if published else None
    rows = _build_rows(usable, pairs, metric, index)
    teachers = [r for r in records if r.dataset == dataset and r.task == "teacher"]
    columns = _build_columns(teachers, pairs, metric, index)
    for col in range(len(columns)):
        # Compare displayed means, so two cells that read the same are both marked.
        shown = [round(row.cells[col].stat.mean, 2) for row in rows if row.cells[col].stat is not None]
        for row in rows:
            stat = row.cells[col].stat
            row.cells[col].best = stat is not None and round(stat.mean, 2) == max(shown)

    models = {model for pair in pairs for model in pair}
    unfinished = [r for r in usable if not r.finished] + [r for r in teachers if not r.finished and r.model in models]
    return Table(dataset, metric, columns, rows, published, sorted(unfinished, key=lambda r: str(r.path)), notes)


def _build_cell(runs: list[RunRecord], metric: str) -> Cell:
    """A cell from the runs of one (row, column), counting only the finished ones."""
    runs = sorted(runs, key=_trial_key)
    done = [r for r in runs if r.finished and r.accuracy(metric) is not None]
    return Cell(_stat([r.accuracy(metric) for r in done]), [r.trial for r in done], [str(r.path) for r in done],
                unfinished=len(runs) - len(done))


def _build_rows(runs: list[RunRecord], pairs: list[tuple[str, str]], metric: str,
                index: Published | None) -> list[Row]:
    """One row per (method, protocol), split further when its runs mix weights or epoch budgets."""
    groups: dict[tuple[str, str], dict[tuple, list[RunRecord]]] = {}
    for record in runs:
        groups.setdefault((record.method, record.protocol), {}).setdefault(_setting(record), []).append(record)
    order = sorted(groups, key=lambda key: (method_rank(key[0]), key[1] != DEFAULT_PROTOCOL, key[1]))
    rows = []
    for method, protocol in order:
        by_setting = groups[(method, protocol)]
        for setting in sorted(by_setting, key=lambda s: tuple(-1 if v is None else v for v in s)):
            label = method if protocol == DEFAULT_PROTOCOL else f"{method} [{protocol}]"
            if len(by_setting) > 1:
                label = f"{label} {_setting_text(setting)}"
            cells = []
            for teacher, student in pairs:
                cell = _build_cell([r for r in by_setting[setting] if (r.teacher, r.model) == (teacher, student)],
                                   metric)
                if index is not None:
                    cell.published = index.lookup(method, teacher, student, protocol)
                cells.append(cell)
            rows.append(Row(label, method, protocol, cells))
    return rows


def _build_columns(teachers: list[RunRecord], pairs: list[tuple[str, str]], metric: str,
                   index: Published | None) -> list[Column]:
    """Columns with the baselines: finished teacher-task runs of the teacher and of the student architecture."""
    finished = [r for r in teachers if r.finished and r.accuracy(metric) is not None]
    columns = []
    for teacher, student in pairs:
        column = Column(teacher, student)
        column.teacher_acc = _stat([r.accuracy(metric) for r in finished if r.model == teacher])
        column.student_acc = _stat([r.accuracy(metric) for r in finished if r.model == student])
        if index is not None:
            column.published_teacher, column.published_student = index.baselines.get((teacher, student), (None, None))
        columns.append(column)
    return columns
