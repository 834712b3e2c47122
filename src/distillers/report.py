"""Result tables from run directories: the seed's CIFAR-100 tables, with trials, mean ± std and provenance.

``collect`` reads run directories (``config.json``, ``summary.json``, ``metrics.jsonl``; see ``rundir``),
``build_table`` groups finished distillation runs into method rows and teacher -> student columns, and
``to_markdown`` / ``to_csv`` / ``to_json`` render the table. Only finished runs are counted; unfinished ones are
listed beside the table, and nothing is ever filled in that no run produced.

Conventions (decided here, pinned by ``tests/test_report.py``):
  * a cell is the mean over finished trials with the sample std (ddof=1); one trial shows no std;
  * the best cell of a column is the highest mean *as displayed* (2 decimals), so ties are all marked;
  * baselines are the same metric of teacher-task runs of the teacher and of the student architecture;
  * a row is (method, protocol); runs of one row with different weights or epoch budgets become separate rows
    (suffix ``(r=.., a=.., b=.., N ep)``) instead of being averaged together;
  * published numbers are compared only with rows of the same protocol (``published.json`` names each one's).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from distillers import rundir
from distillers.errors import UserError
from distillers.seed_grid import pair_rank

METRICS = ("last", "best")
FORMATS = {"markdown": "md", "md": "md", "csv": "csv", "json": "json"}
DEFAULT_PROTOCOL = "crd"
MISSING = "—"

# Registry short names (and the seed's --distill aliases) -> the names the papers' tables use.
DISPLAY_NAMES = {
    "kd": "KD", "fitnet": "FitNet", "hint": "FitNet", "at": "AT", "attention": "AT", "sp": "SP",
    "similarity": "SP", "cc": "CC", "correlation": "CC", "vid": "VID", "rkd": "RKD", "pkt": "PKT", "ab": "AB",
    "abound": "AB", "ft": "FT", "factor": "FT", "fsp": "FSP", "nst": "NST", "crd": "CRD", "kdsvd": "KDSVD",
    "icd": "ICD", "rrd": "RRD", "dkd": "DKD", "reviewkd": "ReviewKD", "ofd": "OFD", "dist": "DIST", "mlkd": "MLKD",
    "kd_ls": "KD+LS", "dkd_ls": "DKD+LS", "mlkd_ls": "MLKD+LS",
}
# Row order of the seed README's tables, then the later methods in the order DESIGN.md lists them.
SEED_ROWS = ("KD", "FitNet", "AT", "SP", "CC", "VID", "RKD", "PKT", "AB", "FT", "FSP", "NST", "CRD", "CRD+KD",
             "ICD", "ICD+KD", "RRD", "RRD+KD")
LATER_METHODS = ("KDSVD", "DKD", "ReviewKD", "OFD", "DIST", "MLKD", "KD+LS", "DKD+LS", "MLKD+LS")
DATASET_NAMES = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "stl10": "STL-10", "tiny_imagenet": "Tiny ImageNet"}
# Where a logit-standardisation switch may sit in config.json (the shared option of DESIGN.md).
_LS_KEYS = ("logit_stand", "logit_standardization", "logit_standardisation")
_OPTION_DICTS = ("options", "method_options")


# --------------------------------------------------------------------------------------------- run records
@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    task: str
    dataset: str
    protocol: str
    trial: Any
    status: str  # summary.json's status, or "no summary" / "unreadable summary"
    model: str | None = None  # the trained network (the student of a distill run)
    teacher: str | None = None
    method: str | None = None  # row label: display name, "+LS", "+KD" (distill runs)
    weights: tuple[float, float, float] = (1.0, 0.0, 0.0)  # gamma, alpha, beta
    epochs: int | None = None
    epochs_done: int | None = None
    last_acc: float | None = None
    best_acc: float | None = None
    config: dict = field(default_factory=dict, repr=False)
    summary: dict = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        """Counted in a table: status finished, every planned epoch done, and an accuracy on record."""
        complete = self.epochs is None or self.epochs_done is None or self.epochs_done >= self.epochs
        return self.status == "finished" and complete and self.last_acc is not None

    def accuracy(self, metric: str) -> float | None:
        return self.last_acc if metric == "last" else self.best_acc

    def progress(self) -> str:
        """One line for the list of unfinished runs."""
        done = "?" if self.epochs_done is None else self.epochs_done
        planned = "?" if self.epochs is None else self.epochs
        return f"{self.status}, {done}/{planned} epochs"


def display_name(method: str, alpha: float = 0.0, logit_stand: bool = False) -> str:
    """Table name of a method: ``crd`` -> ``CRD``; ``+LS`` with logit standardisation; ``+KD`` when alpha > 0."""
    key = method.strip().lower().replace("-", "_")
    name = DISPLAY_NAMES.get(key, method)
    if logit_stand and not name.endswith("+LS"):
        name += "+LS"
    if alpha > 0 and key != "kd":
        name += "+KD"
    return name


def read_metrics_tolerant(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records, skipping a line that does not parse (a run killed mid-write leaves half a line)."""
    path = Path(run_dir) / rundir.METRICS
    if not path.exists():
        return []
    records = []
    with open(path) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in records if isinstance(r, dict)]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _logit_stand(config: dict) -> bool:
    places = [config] + [config[k] for k in _OPTION_DICTS if isinstance(config.get(k), dict)]
    return any(bool(place.get(key)) for place in places for key in _LS_KEYS)


def read_run(run_dir: Path) -> RunRecord:
    """One run directory as a record; raises UserError when ``config.json`` is missing or not JSON."""
    run_dir = Path(run_dir)
    try:
        config = rundir.read_json(run_dir / rundir.CONFIG)
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no {rundir.CONFIG}); pass run directories") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{run_dir / rundir.CONFIG} is not valid JSON ({err}); fix or remove that run") from None
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / rundir.CONFIG} is not a JSON object; fix or remove that run")
    summary: dict = {}
    status = "no summary"
    if (run_dir / rundir.SUMMARY).exists():
        try:
            summary = rundir.read_json(run_dir / rundir.SUMMARY)
            status = str(summary.get("status", "no status")) if isinstance(summary, dict) else "unreadable summary"
        except (json.JSONDecodeError, UnicodeDecodeError):
            status = "unreadable summary"
        summary = summary if isinstance(summary, dict) else {}

    task = str(config.get("task", ""))
    raw_weights = config.get("weights") if isinstance(config.get("weights"), dict) else {}
    gamma, alpha, beta = (_number(raw_weights.get(k)) for k in ("gamma", "alpha", "beta"))
    weights = (1.0 if gamma is None else gamma, 0.0 if alpha is None else alpha, 0.0 if beta is None else beta)
    record = RunRecord(
        path=run_dir, task=task, dataset=str(config.get("dataset", "cifar100")),
        protocol=str(config.get("protocol") or DEFAULT_PROTOCOL), trial=config.get("trial"), status=status,
        weights=weights, config=config, summary=summary,
        epochs=_integer(summary.get("epochs", config.get("epochs"))), epochs_done=_integer(summary.get("epochs_done")),
        last_acc=_number(summary.get("last_acc")), best_acc=_number(summary.get("best_acc")),
    )
    if task == "distill":
        record.model = config.get("student")
        record.teacher = config.get("teacher")
        if config.get("method"):
            record.method = display_name(str(config["method"]), weights[1], _logit_stand(config))
    else:
        record.model = config.get("model")
    if record.status == "finished" and (record.last_acc is None or record.best_acc is None):
        _accuracy_from_metrics(record)
    elif record.status != "finished" and record.epochs_done is None:
        record.epochs_done = len(read_metrics_tolerant(run_dir))  # progress of a run without a summary
    return record


def _accuracy_from_metrics(record: RunRecord) -> None:
    """Fill last/best accuracy from metrics.jsonl when a summary lacks them."""
    accs = [_number(m.get("test_acc")) for m in read_metrics_tolerant(record.path)]
    accs = [a for a in accs if a is not None]
    if accs:
        record.last_acc = accs[-1] if record.last_acc is None else record.last_acc
        record.best_acc = max(accs) if record.best_acc is None else record.best_acc
        record.epochs_done = len(accs) if record.epochs_done is None else record.epochs_done


def collect(run_dirs: Iterable[str | Path]) -> list[RunRecord]:
    """Records of the given run directories; a folder that is not a run is searched for runs below it."""
    found: dict[Path, None] = {}
    for given in run_dirs:
        path = Path(given)
        if not path.is_dir():
            raise UserError(f"run directory {str(given)!r} does not exist; pass run directories or their parent")
        if (path / rundir.CONFIG).is_file():
            found[path.resolve()] = None
            continue
        below = sorted(config.parent for config in path.rglob(rundir.CONFIG))
        if not below:
            raise UserError(f"no run directories (with {rundir.CONFIG}) under {str(given)!r}")
        found.update((run.resolve(), None) for run in below)
    return [read_run(path) for path in sorted(found)]


# --------------------------------------------------------------------------------------------- published numbers
@dataclass(frozen=True)
class PublishedValue:
    top1: float | None  # None: the source says N/A
    source: str


class Published:
    """Index over ``published.json``: (method, teacher, student, protocol) -> published top-1."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.methods: dict[tuple[str, str, str, str], PublishedValue] = {}
        self.baselines: dict[tuple[str, str], tuple[float, float]] = {}
        seed = data["seed"]
        for table in seed["tables"]:
            pairs = [tuple(pair) for pair in table["pairs"]]
            for pair, teacher_acc, student_acc in zip(pairs, table["teacher_top1"], table["student_top1"]):
                self.baselines[pair] = (teacher_acc, student_acc)
            for row in table["rows"]:
                for pair, value in zip(pairs, row["top1"]):
                    self.methods[(row["method"], *pair, seed["protocol"])] = PublishedValue(value, "seed")
        for entry in data.get("modern", []):
            key = (entry["method"], entry["teacher"], entry["student"], entry["protocol"])
            self.methods[key] = PublishedValue(entry["top1"], entry["source"])

    @classmethod
    def load(cls) -> "Published":
        text = resources.files("distillers").joinpath("published.json").read_text(encoding="utf-8")
        return cls(json.loads(text))

    def lookup(self, method: str, teacher: str, student: str, protocol: str) -> PublishedValue | None:
        return self.methods.get((method, teacher, student, protocol))


# --------------------------------------------------------------------------------------------- the table
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
        if self.stat is None or self.published is None or self.published.top1 is None:
            return None
        return self.stat.mean - self.published.top1


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


def _method_rank(label: str) -> tuple:
    """Seed rows in the seed's order, then later methods (each followed by its +KD variant), then the rest."""
    if label in SEED_ROWS:
        return (0, SEED_ROWS.index(label), "")
    base = label[:-3] if label.endswith("+KD") else label
    known = SEED_ROWS + LATER_METHODS
    if base in known:
        return (1, known.index(base), label)
    return (2, 0, label)


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
    trial = _integer(record.trial)
    return (0, trial, str(record.path)) if trial is not None else (1, str(record.trial), str(record.path))


def build_table(records: Sequence[RunRecord], metric: str = "last", published: bool = False,
                dataset: str = "cifar100") -> Table:
    """Methods x teacher->student pairs of the distillation runs on ``dataset``, from finished runs only."""
    if metric not in METRICS:
        raise UserError(f"metric {metric!r} is not supported; choose one of: {', '.join(METRICS)}")
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

    pairs = sorted({(r.teacher, r.model) for r in usable}, key=pair_rank)
    index = Published.load() if published else None
    rows = _build_rows(usable, pairs, metric, index)
    teachers = [r for r in on_dataset if r.task == "teacher"]
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


def _build_rows(runs: list[RunRecord], pairs: list[tuple[str, str]], metric: str,
                index: Published | None) -> list[Row]:
    """One row per (method, protocol), split further when its runs mix weights or epoch budgets."""
    groups: dict[tuple[str, str], dict[tuple, list[RunRecord]]] = {}
    for record in runs:
        groups.setdefault((record.method, record.protocol), {}).setdefault(_setting(record), []).append(record)
    order = sorted(groups, key=lambda key: (_method_rank(key[0]), key[1] != DEFAULT_PROTOCOL, key[1]))
    rows = []
    for method, protocol in order:
        by_setting = groups[(method, protocol)]
        for setting in sorted(by_setting, key=lambda s: tuple(-1 if v is None else v for v in s)):
            label = method if protocol == DEFAULT_PROTOCOL else f"{method} [{protocol}]"
            if len(by_setting) > 1:
                label = f"{label} {_setting_text(setting)}"
            cells = []
            for teacher, student in pairs:
                cell_runs = sorted((r for r in by_setting[setting] if (r.teacher, r.model) == (teacher, student)),
                                   key=_trial_key)
                done = [r for r in cell_runs if r.finished and r.accuracy(metric) is not None]
                cell = Cell(_stat([r.accuracy(metric) for r in done]), [r.trial for r in done],
                            [str(r.path) for r in done], unfinished=len(cell_runs) - len(done))
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


# --------------------------------------------------------------------------------------------- rendering
def _fixed(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    if value is None:
        return MISSING
    rounded = round(value, 2)
    return f"{(0.0 if rounded == 0 else rounded):+.2f}"  # never "-0.00"


def format_stat(stat: Stat | None) -> str:
    """``75.48 ± 0.12 (3)``; one trial ``75.48 (1)``; no trial ``—``."""
    if stat is None:
        return MISSING
    spread = f" ± {stat.std:.2f}" if stat.std is not None else ""
    return f"{stat.mean:.2f}{spread} ({stat.n})"


def _published_text(value: PublishedValue | None) -> str:
    if value is None:
        return MISSING
    return "N/A" if value.top1 is None else f"{value.top1:.2f}"


def _mean(stat: Stat | None) -> float | None:
    return None if stat is None else stat.mean


def caption(table: Table) -> str:
    """What the numbers are: metric, statistic, trials, baselines, marks."""
    low, high = table.trial_range
    trials = f"{low}" if low == high else f"{low}–{high}"
    metric = ("last-epoch test accuracy (the seed's convention)" if table.metric == "last" else
              "best-epoch test accuracy (the maximum over epochs, selected on the test set: optimistic)")
    text = (f"Top-1 {metric}, mean ± sample std (ddof=1) over {trials} finished trial(s) per cell, trial count in "
            f"parentheses; a single trial shows no std. Teacher / student: the same metric of those architectures "
            f"trained alone (teacher runs, mean over trials). Best mean of each column in bold.")
    if table.published:
        text += (" Published: the seed README's numbers (arXiv 2407.11802, 2407.12073) and, for later methods, their "
                 "papers (see published.json); Δ = ours − published; N/A = not reported by the source.")
    return text


def to_markdown(table: Table) -> str:
    """The table as GitHub markdown, with its caption and the list of unfinished runs."""
    title = f"### {DATASET_NAMES.get(table.dataset, table.dataset)} top-1 accuracy (%), {table.metric} epoch"
    header = ["Teacher → student"]
    baseline = ["Teacher / student"]
    for column in table.columns:
        header.append(column.label)
        baseline.append(f"{_fixed(_mean(column.teacher_acc))} / {_fixed(_mean(column.student_acc))}")
        if table.published:
            header += ["published", "Δ"]
            baseline.append(f"{_fixed(column.published_teacher)} / {_fixed(column.published_student)}")
            teacher_diff = _difference(_mean(column.teacher_acc), column.published_teacher)
            student_diff = _difference(_mean(column.student_acc), column.published_student)
            baseline.append(f"{_signed(teacher_diff)} / {_signed(student_diff)}")
    lines = [title, "", caption(table), "", _md_row(header), _md_row(["---"] * len(header)), _md_row(baseline)]
    for row in table.rows:
        cells = [row.label]
        for cell in row.cells:
            text = format_stat(cell.stat)
            text = f"**{text}**" if cell.best else text
            cells.append(f"{text} †" if cell.unfinished else text)
            if table.published:
                cells += [_published_text(cell.published), _signed(cell.diff)]
        lines.append(_md_row(cells))
    if table.unfinished:
        lines += ["", "† Unfinished runs (not counted):"]
        lines += [f"- `{run.path}`: {run.progress()}" for run in table.unfinished]
    if table.notes:
        lines += [""] + [f"Note: {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _difference(ours: float | None, published: float | None) -> float | None:
    return None if ours is None or published is None else ours - published


def blank(value: float | None) -> str:
    """A CSV number: 4 decimals, or empty when there is none."""
    return "" if value is None else f"{value:.4f}"


CSV_FIELDS = ["metric", "method", "protocol", "teacher", "student", "n", "mean", "std", "best", "trials",
              "unfinished", "teacher_acc", "student_acc"]


def to_csv(table: Table) -> str:
    """One line per (method, pair), numbers to 4 decimals; empty = no value (missing cell, std of one trial)."""
    fields = CSV_FIELDS + (["published", "diff"] if table.published else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in table.rows:
        for column, cell in zip(table.columns, row.cells):
            line = {
                "metric": table.metric, "method": row.label, "protocol": row.protocol, "teacher": column.teacher,
                "student": column.student, "n": 0 if cell.stat is None else cell.stat.n,
                "mean": blank(_mean(cell.stat)), "std": blank(None if cell.stat is None else cell.stat.std),
                "best": "true" if cell.best else "false", "trials": ";".join(str(t) for t in cell.trials),
                "unfinished": cell.unfinished, "teacher_acc": blank(_mean(column.teacher_acc)),
                "student_acc": blank(_mean(column.student_acc)),
            }
            if table.published:
                line["published"] = _published_text(cell.published).replace(MISSING, "")
                line["diff"] = blank(cell.diff)
            writer.writerow(line)
    return buffer.getvalue()


def _stat_json(stat: Stat | None) -> dict | None:
    if stat is None:
        return None
    return {"mean": stat.mean, "std": stat.std, "n": stat.n, "values": list(stat.values)}


def table_dict(table: Table) -> dict:
    """The table as plain data (full precision): what ``to_json`` writes."""
    low, high = table.trial_range
    payload: dict[str, Any] = {
        "dataset": table.dataset, "metric": table.metric, "caption": caption(table),
        "std": "sample standard deviation (ddof=1); null for a single trial", "trials": {"min": low, "max": high},
        "columns": [], "rows": [],
        "unfinished_runs": [{"path": str(r.path), "task": r.task, "status": r.status, "epochs_done": r.epochs_done,
                             "epochs": r.epochs} for r in table.unfinished],
        "notes": list(table.notes),
    }
    for column in table.columns:
        entry = {"teacher": column.teacher, "student": column.student, "teacher_acc": _stat_json(column.teacher_acc),
                 "student_acc": _stat_json(column.student_acc)}
        if table.published:
            entry.update(published_teacher=column.published_teacher, published_student=column.published_student)
        payload["columns"].append(entry)
    for row in table.rows:
        cells = []
        for column, cell in zip(table.columns, row.cells):
            entry = {"teacher": column.teacher, "student": column.student, **(_stat_json(cell.stat) or
                     {"mean": None, "std": None, "n": 0, "values": []}),
                     "best": cell.best, "trials": cell.trials, "runs": cell.runs, "unfinished": cell.unfinished}
            if table.published:
                entry["published"] = None if cell.published is None else cell.published.top1
                entry["published_source"] = None if cell.published is None else _source(cell.published)
                entry["diff"] = cell.diff
            cells.append(entry)
        payload["rows"].append({"method": row.label, "base_method": row.method, "protocol": row.protocol,
                                "cells": cells})
    return payload


def _source(value: PublishedValue) -> str:
    return "seed README (arXiv 2407.11802, 2407.12073)" if value.source == "seed" else value.source


def to_json(table: Table) -> str:
    return json.dumps(table_dict(table), indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json}


def write_report(run_dirs: Iterable[str | Path], fmt: str = "markdown", out: str | Path | None = None,
                 metric: str = "last", published: bool = False, plots_dir: str | Path | None = None,
                 dataset: str | None = None) -> str:
    """The CLI's one call: collect runs, build the table, render it (to ``out`` when given), optionally plot.

    ``dataset`` None: the one dataset the distillation runs share (CIFAR-100 when they span several).

    Plots: ``bars_<teacher>_<student>.png`` and ``curves_<teacher>_<student>.png`` for every column.
    Returns the rendered text.
    """
    if fmt not in FORMATS:
        raise UserError(f"report format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    records = collect(run_dirs)
    if dataset is None:
        found = {r.dataset for r in records if r.task == "distill"}
        dataset = found.pop() if len(found) == 1 else "cifar100"
    from distillers.report_transfer import transfer_markdown

    # Transfer runs (linear probes) make the seed's third table; markdown shows it under the distillation one.
    transfer_text = transfer_markdown(records, metric, published) if FORMATS[fmt] == "md" else ""
    try:
        table: Table | None = build_table(records, metric=metric, published=published, dataset=dataset)
    except UserError:
        if not transfer_text:
            raise
        table = None
    text = "\n".join(part for part in (RENDERERS[FORMATS[fmt]](table) if table else "", transfer_text) if part)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    if plots_dir is not None and table is not None:
        from distillers import plots  # matplotlib only when plots are asked for

        plots_dir = Path(plots_dir)
        plots_dir.mkdir(parents=True, exist_ok=True)
        for index, column in enumerate(table.columns):
            name = f"{column.teacher}_{column.student}"
            if any(row.cells[index].stat is not None for row in table.rows):  # a column of only unfinished runs
                plots.table_bars(table, (column.teacher, column.student), plots_dir / f"bars_{name}.png")
            runs = [r for r in records if r.task == "distill" and r.dataset == table.dataset
                    and (r.teacher, r.model) == (column.teacher, column.student)]
            if any(plots.has_curve(run) for run in runs):
                plots.accuracy_curves(runs, plots_dir / f"curves_{name}.png")
    return text
