"""Report figures: accuracy curves, one table column as bars, t-SNE of embeddings, teacher/student correlation gap.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``) rather than through
``pyplot``, so importing this module never changes the backend or global state of the caller (a notebook, a
training process). Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from distillers.errors import UserError
from distillers.reporting.names import DATASET_NAMES
from distillers.reporting.runs import RunRecord, read_metrics_tolerant, read_run
from distillers.reporting.table import Table

DPI = 120
EXACT_TSNE_MAX = 1000  # points; exact t-SNE costs O(N^2) memory and time


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def _array(values: Any, name: str) -> np.ndarray:
    """A numpy float array from a numpy array, a list or a (possibly CUDA, possibly grad) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise UserError(f"{name} contains NaN or infinite values; pass finite numbers")
    return array


def has_curve(run: RunRecord | str | Path) -> bool:
    """Whether a run has at least one epoch with a test accuracy to draw."""
    path = run.path if isinstance(run, RunRecord) else Path(run)
    return any("test_acc" in m for m in read_metrics_tolerant(path))


def accuracy_curves(runs: Sequence[RunRecord | str | Path], path: str | Path, title: str | None = None) -> Path:
    """Test top-1 per epoch of each run (one colour per method, dashed while unfinished)."""
    records = [run if isinstance(run, RunRecord) else read_run(Path(run)) for run in runs]
    figure = Figure(figsize=(8, 5))
    axes = figure.add_subplot()
    colours: dict[str, Any] = {}
    palette = [f"C{i}" for i in range(10)]
    drawn = 0
    for record in records:
        points = [(m["epoch"], m["test_acc"]) for m in read_metrics_tolerant(record.path)
                  if m.get("epoch") is not None and m.get("test_acc") is not None]
        if not points:
            continue
        name = (record.method or "?") if record.task == "distill" else f"{record.model} ({record.task})"
        name = name if record.protocol == "crd" else f"{name} [{record.protocol}]"
        colour = colours.setdefault(name, palette[len(colours) % len(palette)])
        label = f"{name}, trial {record.trial}" + ("" if record.finished else f" ({record.status})")
        epochs, accs = zip(*points)
        axes.plot(epochs, accs, color=colour, linestyle="-" if record.finished else "--", linewidth=1.2,
                  label=label)
        drawn += 1
    if not drawn:
        raise UserError("none of the given runs has test accuracies in metrics.jsonl; pass runs that trained")
    pairs = {(r.teacher, r.model) for r in records if r.task == "distill"}
    if title is None:
        title = "Test accuracy per epoch"
        if len(pairs) == 1 and len(records) == sum(r.task == "distill" for r in records):
            teacher, student = pairs.pop()
            title = f"{teacher} → {student}: test accuracy per epoch"
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.set_ylabel("top-1 test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2 if drawn > 8 else 1)
    figure.tight_layout()
    return _save(figure, path)


def _pair(pair: tuple[str, str] | str) -> tuple[str, str]:
    if isinstance(pair, str):
        for arrow in ("->", "→"):
            if arrow in pair:
                teacher, student = (part.strip() for part in pair.split(arrow, 1))
                return teacher, student
        raise UserError(f"pair {pair!r} is not 'teacher->student'; write e.g. resnet32x4->resnet8x4")
    return tuple(pair)  # type: ignore[return-value]


def table_bars(table: Table, pair: tuple[str, str] | str, path: str | Path) -> Path:
    """One column of a table as bars (mean, error bar = sample std), baselines and published numbers marked."""
    teacher, student = _pair(pair)
    index = table.column(teacher, student)
    column = table.columns[index]
    rows = [(row.label, row.cells[index]) for row in table.rows if row.cells[index].stat is not None]
    if not rows:
        raise UserError(f"the table has no finished runs for {teacher}->{student}; nothing to plot")
    labels = [label for label, _ in rows]
    means = np.array([cell.stat.mean for _, cell in rows])
    errors = np.array([cell.stat.std or 0.0 for _, cell in rows])
    figure = Figure(figsize=(max(6.0, 0.6 * len(rows) + 2), 5))
    axes = figure.add_subplot()
    x = np.arange(len(rows))
    colours = ["tab:orange" if cell.best else "tab:blue" for _, cell in rows]
    axes.bar(x, means, yerr=errors, color=colours, capsize=4)
    for position, mean, (_, cell) in zip(x, means, rows):
        axes.annotate(f"{mean:.2f}\n({cell.stat.n})", (position, mean), textcoords="offset points", xytext=(0, 4),
                      ha="center", fontsize="x-small")
    shown = list(means - errors) + list(means + errors)
    published = [(p, cell.published.top1) for p, (_, cell) in zip(x, rows)
                 if cell.published is not None and cell.published.top1 is not None]
    if published:
        axes.scatter(*zip(*published), marker="D", color="black", zorder=3, label="published")
        shown += [value for _, value in published]
    for stat, style, name in ((column.teacher_acc, "--", "teacher"), (column.student_acc, ":", "student")):
        if stat is not None:
            axes.axhline(stat.mean, color="tab:red" if name == "teacher" else "tab:gray", linestyle=style,
                         label=f"{name} {getattr(column, name)} ({stat.mean:.2f})")
            shown.append(stat.mean)
    # Accuracies of one column differ by a few points: start the axis near them, not at zero.
    axes.set_ylim(min(shown) - 2.0, max(shown) + 1.5)
    axes.set_xticks(x, labels, rotation=45, ha="right")
    dataset = DATASET_NAMES.get(table.dataset, table.dataset)
    axes.set_title(f"{dataset}: {teacher} → {student}\n{table.metric}-epoch top-1, mean ± std over trials")
    axes.set_xlabel("method")
    axes.set_ylabel("top-1 test accuracy (%)")
    axes.grid(axis="y", alpha=0.3)
    # Bars have two colours, so the legend gets one proxy patch for each.
    handles, names = axes.get_legend_handles_labels()
    proxies = [Patch(color="tab:blue", label="ours"), Patch(color="tab:orange", label="best of column")]
    axes.legend(proxies + handles, [p.get_label() for p in proxies] + names, fontsize="small", loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def report_figures(table: Table, records: Sequence[RunRecord], plots_dir: str | Path) -> list[Path]:
    """The report's figures, for every column: ``bars_<teacher>_<student>.png`` (when the column has a finished
    cell) and ``curves_<teacher>_<student>.png`` (when one of its runs has a test accuracy)."""
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, column in enumerate(table.columns):
        name = f"{column.teacher}_{column.student}"
        if any(row.cells[index].stat is not None for row in table.rows):  # a column of only unfinished runs
            written.append(table_bars(table, (column.teacher, column.student), plots_dir / f"bars_{name}.png"))
        runs = [r for r in records if r.task == "distill" and r.dataset == table.dataset
                and (r.teacher, r.model) == (column.teacher, column.student)]
        if any(has_curve(run) for run in runs):
            written.append(accuracy_curves(runs, plots_dir / f"curves_{name}.png"))
    return written


def tsne_plot(embeddings: Any, labels: Any, path: str | Path, title: str | None = None,
              perplexity: float | None = None) -> Path:
    """2-D t-SNE of embeddings (N, D), one colour per label; needs scikit-learn (``distillers[analysis]``)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise UserError("t-SNE plots need scikit-learn: pip install distillers[analysis]") from None
    points = _array(embeddings, "embeddings")
    classes = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels).reshape(-1)
    if points.ndim != 2 or len(points) < 5:
        raise UserError(f"embeddings must be (N, D) with N >= 5, got shape {points.shape}")
    if len(classes) != len(points):
        raise UserError(f"{len(classes)} labels for {len(points)} embeddings; pass one label per row")
    # scikit-learn needs perplexity < N; 30 (its default) is right for thousands of points, not for a few.
    perplexity = perplexity if perplexity is not None else max(2.0, min(30.0, (len(points) - 1) / 3))
    # Exact gradients for small sets: more faithful, and Barnes-Hut's OpenMP threads crawl on a busy machine.
    method = "exact" if len(points) <= EXACT_TSNE_MAX else "barnes_hut"
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0,
                  method=method).fit_transform(points)
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    unique = np.unique(classes)
    if len(unique) <= 20:
        palette = [f"C{i}" for i in range(10)] if len(unique) <= 10 else None
        for i, value in enumerate(unique):
            colour = palette[i] if palette else _tab20(i)
            chosen = classes == value
            axes.scatter(coords[chosen, 0], coords[chosen, 1], s=12, color=colour, label=str(value))
        axes.legend(title="label", fontsize="small", markerscale=1.5, loc="best")
    else:
        codes = np.searchsorted(unique, classes)
        scatter = axes.scatter(coords[:, 0], coords[:, 1], s=8, c=codes, cmap="nipy_spectral")
        figure.colorbar(scatter, ax=axes, label="label index")
    axes.set_title(title or f"t-SNE of {len(points)} embeddings ({len(unique)} classes)")
    axes.set_xlabel("t-SNE 1")
    axes.set_ylabel("t-SNE 2")
    figure.tight_layout()
    return _save(figure, path)


def _tab20(index: int) -> Any:
    from matplotlib import colormaps

    return colormaps["tab20"](index % 20)


def correlation_difference_plot(logits_teacher: Any, logits_student: Any, path: str | Path,
                                title: str | None = None, max_diff: float | None = None) -> Path:
    """Heat map of |corr(teacher logits) - corr(student logits)|, the class-by-class correlations over a test set.

    The CRD paper's Figure 3 idea (also the seed's plot_corr.py): a student that captured the teacher's
    inter-class structure has a small difference. ``max_diff`` caps the colour scale so figures compare.
    """
    teacher = _array(logits_teacher, "teacher logits")
    student = _array(logits_student, "student logits")
    if teacher.ndim != 2 or teacher.shape != student.shape or len(teacher) < 2:
        raise UserError(f"teacher and student logits must both be (N >= 2, classes); got {teacher.shape} and "
                        f"{student.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        # Class-by-class Pearson correlation over samples; a constant class column has no correlation (0).
        corr_teacher = np.nan_to_num(np.corrcoef(teacher, rowvar=False))
        corr_student = np.nan_to_num(np.corrcoef(student, rowvar=False))
    difference = np.abs(corr_teacher - corr_student)
    figure = Figure(figsize=(7, 6))
    axes = figure.add_subplot()
    top = max_diff if max_diff is not None else max(float(difference.max()), 1e-12)
    image = axes.imshow(difference, cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
    figure.colorbar(image, ax=axes, label="|corr(teacher) − corr(student)|")
    classes = teacher.shape[1]
    axes.set_title(title or f"Class correlation of logits: |teacher − student|\n{len(teacher)} samples, {classes} "
                            f"classes, mean difference {difference.mean():.3f}")
    axes.set_xlabel("class")
    axes.set_ylabel("class")
    figure.tight_layout()
    return _save(figure, path)
