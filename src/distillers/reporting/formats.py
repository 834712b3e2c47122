"""The formats a table is written in (markdown, CSV, JSON), registered by name like methods and models.

A format is a function ``Table -> str``; ``FORMATS.get(name)`` finds it, and a new format is one registered
function here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from distillers.errors import UserError
from distillers.registry import Registry
from distillers.reporting.names import DATASET_NAMES
from distillers.reporting.published import PublishedValue
from distillers.reporting.table import MISSING, Stat, Table, difference, format_stat, mean_of

FORMATS: Registry[Callable[[Table], str]] = Registry("report format")
MARKDOWN = "markdown"
CSV_FIELDS = ["metric", "method", "protocol", "teacher", "student", "n", "mean", "std", "best", "trials",
              "unfinished", "teacher_acc", "student_acc"]


def format_named(name: str) -> str:
    """The registered name of a format (``md`` -> ``markdown``); a UserError lists every accepted name."""
    if name not in FORMATS:
        choices = [choice for known in FORMATS.names() for choice in (known, *FORMATS.aliases_of(known))]
        raise UserError(f"report format {name!r} is not supported; choose one of: {', '.join(choices)}")
    return FORMATS.canonical(name)


def _fixed(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    if value is None:
        return MISSING
    rounded = round(value, 2)
    return f"{(0.0 if rounded == 0 else rounded):+.2f}"  # never "-0.00"


def _published_text(value: PublishedValue | None) -> str:
    if value is None:
        return MISSING
    return "N/A" if value.top1 is None else f"{value.top1:.2f}"


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


def markdown_row(cells: list[str]) -> str:
    """One line of a GitHub markdown table."""
    return "| " + " | ".join(cells) + " |"


def _markdown_header(table: Table) -> list[str]:
    """The header line, its rule and the baselines line (teacher / student of each column)."""
    header = ["Teacher → student"]
    baseline = ["Teacher / student"]
    for column in table.columns:
        header.append(column.label)
        baseline.append(f"{_fixed(mean_of(column.teacher_acc))} / {_fixed(mean_of(column.student_acc))}")
        if table.published:
            header += ["published", "Δ"]
            baseline.append(f"{_fixed(column.published_teacher)} / {_fixed(column.published_student)}")
            teacher_diff = difference(mean_of(column.teacher_acc), column.published_teacher)
            student_diff = difference(mean_of(column.student_acc), column.published_student)
            baseline.append(f"{_signed(teacher_diff)} / {_signed(student_diff)}")
    return [markdown_row(header), markdown_row(["---"] * len(header)), markdown_row(baseline)]


@FORMATS.register(MARKDOWN, "md")
def to_markdown(table: Table) -> str:
    """The table as GitHub markdown, with its caption and the list of unfinished runs."""
    title = f"### {DATASET_NAMES.get(table.dataset, table.dataset)} top-1 accuracy (%), {table.metric} epoch"
    lines = [title, "", caption(table), "", *_markdown_header(table)]
    for row in table.rows:
        cells = [row.label]
        for cell in row.cells:
            text = format_stat(cell.stat)
            text = f"**{text}**" if cell.best else text
            cells.append(f"{text} †" if cell.unfinished else text)
            if table.published:
                cells += [_published_text(cell.published), _signed(cell.diff)]
        lines.append(markdown_row(cells))
    if table.unfinished:
        lines += ["", "† Unfinished runs (not counted):"]
        lines += [f"- `{run.path}`: {run.progress()}" for run in table.unfinished]
    if table.notes:
        lines += [""] + [f"Note: {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def blank(value: float | None) -> str:
    """A CSV number: 4 decimals, or empty when there is none."""
    return "" if value is None else f"{value:.4f}"


@FORMATS.register("csv")
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
                "mean": blank(mean_of(cell.stat)), "std": blank(None if cell.stat is None else cell.stat.std),
                "best": "true" if cell.best else "false", "trials": ";".join(str(t) for t in cell.trials),
                "unfinished": cell.unfinished, "teacher_acc": blank(mean_of(column.teacher_acc)),
                "student_acc": blank(mean_of(column.student_acc)),
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


def _rows_json(table: Table) -> list[dict[str, Any]]:
    rows = []
    for row in table.rows:
        cells = []
        for column, cell in zip(table.columns, row.cells):
            entry = {"teacher": column.teacher, "student": column.student, **(_stat_json(cell.stat) or
                     {"mean": None, "std": None, "n": 0, "values": []}),
                     "best": cell.best, "trials": cell.trials, "runs": cell.runs, "unfinished": cell.unfinished}
            if table.published:
                entry["published"] = None if cell.published is None else cell.published.top1
                entry["published_source"] = None if cell.published is None else cell.published.source_text
                entry["diff"] = cell.diff
            cells.append(entry)
        rows.append({"method": row.label, "base_method": row.method, "protocol": row.protocol, "cells": cells})
    return rows


def table_dict(table: Table) -> dict:
    """The table as plain data (full precision): what ``to_json`` writes."""
    low, high = table.trial_range
    payload: dict[str, Any] = {
        "dataset": table.dataset, "metric": table.metric, "caption": caption(table),
        "std": "sample standard deviation (ddof=1); null for a single trial", "trials": {"min": low, "max": high},
        "columns": [], "rows": _rows_json(table),
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
    return payload


@FORMATS.register("json")
def to_json(table: Table) -> str:
    """The table as JSON (``table_dict``), indented, non-ASCII kept."""
    return json.dumps(table_dict(table), indent=2, ensure_ascii=False) + "\n"
