"""Result tables from run directories: the seed's CIFAR-100 tables, with trials, mean ± std and provenance.

``write_report`` is the one call the CLI and the sweep make. Its parts, one concern per module:
``runs`` reads run directories, ``table`` builds the table model (``published`` supplies the published numbers
beside it), ``formats`` renders it (markdown, CSV, JSON), ``transfer`` builds the linear-probe table, ``plots``
draws the figures, and ``names`` says what rows are called and in which order (from the method registry).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from distillers.errors import UserError
from distillers.reporting.formats import FORMATS, MARKDOWN, format_named, table_dict, to_csv, to_json, to_markdown
from distillers.reporting.names import display_name
from distillers.reporting.runs import RunRecord, collect, read_run
from distillers.reporting.table import Table, build_table
from distillers.reporting.transfer import transfer_markdown

__all__ = ["FORMATS", "RunRecord", "Table", "build_table", "collect", "display_name", "read_run", "table_dict",
           "to_csv", "to_json", "to_markdown", "transfer_markdown", "write_report"]


def _report_dataset(records: list[RunRecord]) -> str:
    """The one dataset the distillation runs share (CIFAR-100 when they span several)."""
    found = {r.dataset for r in records if r.task == "distill"}
    return found.pop() if len(found) == 1 else "cifar100"


def _check_destinations(out: str | Path | None, plots_dir: str | Path | None) -> None:
    """A table file that is a folder, or a plots folder below a file, is refused before any run is read."""
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out {out} is a folder; name the file to write (e.g. {Path(out) / 'table.md'})")
    for label, path, folder in (("--out", out, False), ("--plots", plots_dir, True)):
        if path is None:
            continue
        candidates = (Path(path), *Path(path).parents) if folder else Path(path).parents
        blocked = next((p for p in candidates if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise UserError(f"{label} {path} cannot be written: {blocked} is a file; choose another {label}")


def write_report(run_dirs: Iterable[str | Path], fmt: str = "markdown", out: str | Path | None = None,
                 metric: str = "last", published: bool = False, plots_dir: str | Path | None = None,
                 dataset: str | None = None) -> str:
    """Collect runs, build the table, render it (to ``out`` when given), optionally plot; returns the text.

    ``dataset`` None: the one dataset the distillation runs share (CIFAR-100 when they span several).
    Plots: ``bars_<teacher>_<student>.png`` and ``curves_<teacher>_<student>.png`` for every column.
    """
    fmt = format_named(fmt)
    _check_destinations(out, plots_dir)
    records = collect(run_dirs)
    dataset = _report_dataset(records) if dataset is None else dataset
    # Transfer runs (linear probes) make the seed's third table; markdown shows it under the distillation one.
    transfer_text = transfer_markdown(records, metric, published) if fmt == MARKDOWN else ""
    try:
        table: Table | None = build_table(records, metric=metric, published=published, dataset=dataset)
    except UserError:
        if not transfer_text:
            raise
        table = None
    text = "\n".join(part for part in (FORMATS.get(fmt)(table) if table else "", transfer_text) if part)
    if out is not None:
        out = Path(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot write --out {out}: {error.strerror or error}") from error
    if plots_dir is not None and table is not None:
        from distillers.reporting import plots  # matplotlib only when plots are asked for

        plots.report_figures(table, records, plots_dir)
    return text
