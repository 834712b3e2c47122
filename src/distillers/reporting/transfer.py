"""The seed's transfer table: linear probes of CIFAR-100 networks on STL-10 and TinyImageNet, from run directories.

Rows are the networks that were probed, named by how they were trained (the distillation method of the source
run, e.g. ``CRD+KD``, or ``<arch> alone`` for a network trained from scratch); columns are the target datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from distillers import rundir
from distillers.errors import UserError
from distillers.reporting.formats import markdown_row
from distillers.reporting.names import method_rank
from distillers.reporting.published import published_data
from distillers.reporting.runs import RunRecord, read_run
from distillers.reporting.table import MISSING, Stat, format_stat

TARGETS = ("stl10", "tinyimagenet")  # registry names, in the seed table's column order
TITLES = {"stl10": "CIFAR-100 → STL-10", "tinyimagenet": "CIFAR-100 → Tiny ImageNet"}
PUBLISHED_NAMES = {"stl10": "stl10", "tinyimagenet": "tiny_imagenet"}  # published.json's dataset keys


def source_label(record: RunRecord) -> str:
    """How the probed network was trained, read from the run that produced the checkpoint."""
    student_path = record.config.get("student_path")
    source_dir = Path(student_path).parent if student_path else None
    if source_dir is None or not (source_dir / rundir.CONFIG).exists():
        return f"{record.model} (source run not found)"
    try:
        source = read_run(source_dir)
    except UserError:
        return f"{record.model} (source run unreadable)"
    if source.task == "distill" and source.method:
        return source.method
    return f"{source.model} alone"


def published_transfer() -> dict:
    """The transfer entry of ``published.json`` (the seed README's third table)."""
    return published_data()["transfer"]


def transfer_markdown(records: Sequence[RunRecord], metric: str = "last", published: bool = False) -> str:
    """Markdown table of the finished transfer runs among ``records`` ('' when there are none)."""
    runs = [r for r in records if r.task == "transfer" and r.finished]
    if not runs:
        return ""
    targets = [t for t in TARGETS if any(r.dataset == t for r in runs)]
    targets += sorted({r.dataset for r in runs} - set(targets))
    values: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        accuracy = run.accuracy(metric)
        if accuracy is not None:
            values.setdefault(source_label(run), {}).setdefault(run.dataset, []).append(accuracy)
    reference = published_transfer() if published else None
    header = ["Network (how it was trained)"] + [TITLES.get(t, t) for t in targets]
    lines = [f"### Transfer: linear probe top-1 accuracy (%), {metric} epoch", "",
             markdown_row(header), "|" + " --- |" * len(header)]
    for label in sorted(values, key=method_rank):
        cells = [label]
        for target in targets:
            stat = Stat(values[label][target]) if target in values[label] else None
            text = format_stat(stat) if stat else MISSING
            if reference is not None:
                text += f" [paper {_published(reference, label, target)}]"
            cells.append(text)
        lines.append(markdown_row(cells))
    if reference is not None:
        lines += ["", f"Paper numbers: {reference['source']}."]
    return "\n".join(lines) + "\n"


def _published(reference: dict, label: str, target: str) -> str:
    name = PUBLISHED_NAMES.get(target)
    if name not in reference["datasets"]:
        return MISSING
    column = reference["datasets"].index(name)
    for row in reference["rows"]:
        if row["method"] == label and row["top1"][column] is not None:
            return f"{row['top1'][column]:.1f}"
    return MISSING
