"""Result tables from synthetic run directories: exact markdown/CSV/JSON, statistics, ordering, published numbers."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import statistics
from importlib import resources
from pathlib import Path

import pytest

import distillers.reporting as report
from distillers import rundir
from distillers.errors import UserError

SEED_README = Path(os.environ.get("DISTILLERS_SEED_README")
                   or Path(__file__).resolve().parents[2] / "shared" / "seed" / "distillers-README.txt")
PAIR_A = ("resnet32x4", "resnet8x4")
PAIR_B = ("wrn_40_2", "wrn_16_2")
PAIR_C = ("vgg13", "vgg8")
COLUMNS = [PAIR_B, PAIR_A, PAIR_C]  # the seed's column order, not the alphabetical one of the run folders
ROWS = ["KD", "FitNet", "CRD", "CRD+KD", "ICD", "DKD", "mymethod"]  # seed order, then later, then unknown


def published_data() -> dict:
    return json.loads(resources.files("distillers").joinpath("published.json").read_text(encoding="utf-8"))


def write_run(run: Path, config: dict, accs: list[float], status: str | None = "finished",
              epochs: int | None = None, summary_keys: tuple = ("last_acc", "best_acc")) -> Path:
    """A run directory as the engine writes it; status None leaves out summary.json (a run still going)."""
    run.mkdir(parents=True)
    (run / rundir.CONFIG).write_text(json.dumps({**config, "an_unknown_key": {"x": 1}}))
    with open(run / rundir.METRICS, "w") as handle:
        for epoch, acc in enumerate(accs, 1):
            handle.write(json.dumps({"epoch": epoch, "lr": 0.05, "train_loss": 1.0, "train_acc": 50.0,
                                     "test_acc": acc, "test_acc_top5": 90.0, "test_loss": 1.2}) + "\n")
    if status is not None:
        summary = {"status": status, "epochs": epochs or len(accs), "epochs_done": len(accs),
                   "best_epoch": accs.index(max(accs)) + 1, "wall_time_s": 3.0, "teacher_acc": 79.0,
                   "another_unknown_key": [1, 2]}
        full = {"last_acc": accs[-1], "best_acc": max(accs)}
        summary.update({key: full[key] for key in summary_keys})
        (run / rundir.SUMMARY).write_text(json.dumps(summary))
    return run


class Runs:
    """Builds run directories and remembers the accuracies each (label, pair) cell must show."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rng = random.Random(7)
        self.cells: dict[tuple[str, tuple[str, str]], list[tuple[int, float, float]]] = {}
        self.baselines: dict[str, list[tuple[float, float]]] = {}
        self.unfinished: list[Path] = []

    def accs(self, n: int = 4) -> list[float]:
        # The best epoch is never the last, so "last" and "best" tables differ.
        values = [round(self.rng.uniform(60, 80), 2) for _ in range(n - 1)]
        return values[:1] + [max(values) + 0.37] + values[1:-1] + [values[-1]]

    def distill(self, label: str, method: str, pair: tuple[str, str], trial: int, alpha: float = 0.0,
                beta: float = 0.8, status: str | None = "finished", dataset: str = "cifar100", gamma: float = 1.0,
                protocol: str = "crd", **extra) -> Path:
        teacher, student = pair
        accs = self.accs() if status == "finished" else self.accs()[:2]  # unfinished: 2 of the 4 planned epochs
        name = rundir.distill_run_name(student, teacher, dataset, method, gamma, alpha, beta, trial)
        config = {"task": "distill", "student": student, "teacher": teacher, "method": method, "dataset": dataset,
                  "weights": {"gamma": gamma, "alpha": alpha, "beta": beta}, "trial": trial, "protocol": protocol,
                  "epochs": 4, **extra}
        run = write_run(self.root / f"{name}_{protocol}", config, accs, status, epochs=config["epochs"])
        if status == "finished" and dataset == "cifar100":
            self.cells.setdefault((label, pair), []).append((trial, accs[-1], max(accs)))
        elif dataset == "cifar100":
            self.unfinished.append(run)
        return run

    def teacher(self, model: str, trial: int, status: str = "finished") -> Path:
        accs = self.accs()
        config = {"task": "teacher", "model": model, "dataset": "cifar100", "trial": trial, "protocol": "crd"}
        run = write_run(self.root / rundir.teacher_run_name(model, "cifar100", trial), config, accs, status,
                        epochs=len(accs) if status == "finished" else 240)
        if status == "finished":
            self.baselines.setdefault(model, []).append((accs[-1], max(accs)))
        else:
            self.unfinished.append(run)
        return run


@pytest.fixture()
def runs(tmp_path: Path) -> Runs:
    built = Runs(tmp_path / "runs")
    for model, trials in (("resnet32x4", 2), ("resnet8x4", 1), ("wrn_40_2", 1)):
        for trial in range(1, trials + 1):
            built.teacher(model, trial)
    built.teacher("wrn_16_2", 1, status="interrupted")  # unfinished: its baseline shows "—"
    for trial in (1, 2, 3):
        built.distill("KD", "kd", PAIR_A, trial, alpha=0.9, beta=0.0, gamma=0.1)
    for trial in (1, 2):
        built.distill("FitNet", "fitnet", PAIR_A, trial, beta=100.0)
        built.distill("CRD", "crd", PAIR_A, trial)
        built.distill("KD", "kd", PAIR_B, trial, alpha=0.9, beta=0.0, gamma=0.1)
    built.distill("CRD+KD", "crd", PAIR_A, 1, alpha=1.0)
    built.distill("ICD", "icd", PAIR_A, 1, beta=1.0)
    built.distill("ICD", "icd", PAIR_A, 2, beta=1.0, status="interrupted")
    built.distill("DKD", "dkd", PAIR_A, 1, beta=1.0)
    built.distill("mymethod", "mymethod", PAIR_A, 1, beta=1.0)
    built.distill("CRD", "crd", PAIR_B, 1)
    built.distill("CRD", "crd", PAIR_B, 2, status=None)  # still running: no summary.json
    built.distill("CRD", "crd", PAIR_C, 1)
    built.distill("KD", "kd", PAIR_A, 9, alpha=0.9, beta=0.0, gamma=0.1, dataset="cifar10")  # other dataset
    write_run(built.root / "transfer_wrn_16_2", {"task": "transfer", "model": "wrn_16_2", "dataset": "cifar100",
                                                 "trial": 1}, [50.0, 51.0])
    return built


# ----------------------------------------------------------------------------------------- expected values
def stat_text(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (1)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} ({len(values)})"


def cell_values(runs: Runs, label: str, pair: tuple[str, str], metric: str) -> list[float]:
    return [last if metric == "last" else best for _, last, best in runs.cells.get((label, pair), [])]


def baseline_text(runs: Runs, model: str, metric: str) -> str:
    values = [last if metric == "last" else best for last, best in runs.baselines.get(model, [])]
    return f"{statistics.mean(values):.2f}" if values else "—"


def best_labels(runs: Runs, pair: tuple[str, str], metric: str) -> set[str]:
    means = {label: round(statistics.mean(cell_values(runs, label, pair, metric)), 2)
             for label in ROWS if cell_values(runs, label, pair, metric)}
    return {label for label, mean in means.items() if mean == max(means.values())}


def published_value(label: str, pair: tuple[str, str], protocol: str = "crd") -> float | None | str:
    """The published number, None for N/A, "missing" when no source has one (looked up without report.py)."""
    data = published_data()
    for table in data["seed"]["tables"]:
        pairs = [tuple(p) for p in table["pairs"]]
        for row in table["rows"]:
            if row["method"] == label and pair in pairs and protocol == "crd":
                return row["top1"][pairs.index(pair)]
    for entry in data["modern"]:
        if (entry["method"], entry["teacher"], entry["student"], entry["protocol"]) == (label, *pair, protocol):
            return entry["top1"]
    return "missing"


def published_baselines(pair: tuple[str, str]) -> tuple[float, float] | None:
    for table in published_data()["seed"]["tables"]:
        pairs = [tuple(p) for p in table["pairs"]]
        if pair in pairs:
            return table["teacher_top1"][pairs.index(pair)], table["student_top1"][pairs.index(pair)]
    return None


def signed(value: float) -> str:
    rounded = round(value, 2)
    return f"{(0.0 if rounded == 0 else rounded):+.2f}"


def expected_lines(runs: Runs, metric: str, published: bool = False) -> list[str]:
    header = ["Teacher → student"]
    baseline = ["Teacher / student"]
    for teacher, student in COLUMNS:
        header.append(f"{teacher} → {student}")
        ours_t, ours_s = baseline_text(runs, teacher, metric), baseline_text(runs, student, metric)
        baseline.append(f"{ours_t} / {ours_s}")
        if published:
            header += ["published", "Δ"]
            pub = published_baselines((teacher, student))
            baseline.append(f"{pub[0]:.2f} / {pub[1]:.2f}" if pub else "— / —")
            diffs = []
            for model, index in ((teacher, 0), (student, 1)):
                values = [last if metric == "last" else best for last, best in runs.baselines.get(model, [])]
                diffs.append(signed(statistics.mean(values) - pub[index]) if values and pub else "—")
            baseline.append(" / ".join(diffs))
    lines = [header, ["---"] * len(header), baseline]
    for label in ROWS:
        row = [label]
        for pair in COLUMNS:
            values = cell_values(runs, label, pair, metric)
            text = stat_text(values)
            if values and label in best_labels(runs, pair, metric):
                text = f"**{text}**"
            unfinished = (label, pair) in {("ICD", PAIR_A), ("CRD", PAIR_B)}
            row.append(text + " †" if unfinished else text)
            if published:
                value = published_value(label, pair)
                row.append("—" if value == "missing" else "N/A" if value is None else f"{value:.2f}")
                row.append(signed(statistics.mean(values) - value) if values and isinstance(value, float) else "—")
        lines.append(row)
    return ["| " + " | ".join(cells) + " |" for cells in lines]


# ----------------------------------------------------------------------------------------- tables
@pytest.mark.parametrize("metric", ["last", "best"])
def test_markdown_table_is_exact(runs: Runs, metric: str) -> None:
    table = report.build_table(report.collect([runs.root]), metric=metric)
    markdown = report.to_markdown(table)
    assert [line for line in markdown.splitlines() if line.startswith("|")] == expected_lines(runs, metric)
    lines = markdown.splitlines()
    assert lines[0] == f"### CIFAR-100 top-1 accuracy (%), {metric} epoch"
    assert ("last-epoch test accuracy" if metric == "last" else "best-epoch test accuracy") in lines[2]
    assert "sample std (ddof=1) over 1–3 finished trial(s) per cell" in lines[2]
    listed = lines[lines.index("† Unfinished runs (not counted):") + 1:]
    assert [line for line in listed if line.startswith("- ")] == [
        f"- `{run.resolve()}`: {status}" for run, status in sorted(
            zip(runs.unfinished, ["interrupted, 4/240 epochs", "interrupted, 2/4 epochs", "no summary, 2/4 epochs"]),
            key=lambda item: str(item[0].resolve()))]
    assert "Note: 1 transfer run(s) are not part of this table" in lines


def test_last_and_best_tables_differ(runs: Runs) -> None:
    records = report.collect([runs.root])
    last = report.build_table(records, metric="last")
    best = report.build_table(records, metric="best")
    kd_last, kd_best = last.rows[0].cells[1].stat, best.rows[0].cells[1].stat
    assert kd_last.values == pytest.approx(cell_values(runs, "KD", PAIR_A, "last"))
    assert kd_best.values == pytest.approx(cell_values(runs, "KD", PAIR_A, "best"))
    assert all(b > a for a, b in zip(kd_last.values, kd_best.values))


def test_unfinished_runs_are_never_counted(runs: Runs) -> None:
    table = report.build_table(report.collect([runs.root]))
    icd = table.rows[ROWS.index("ICD")].cells[1]
    assert (icd.stat.n, icd.trials, icd.unfinished) == (1, [1], 1)
    crd_b = table.rows[ROWS.index("CRD")].cells[0]
    assert (crd_b.stat.n, crd_b.unfinished) == (1, 1)
    assert table.columns[0].student_acc is None  # wrn_16_2's only teacher run was interrupted
    assert {str(r.path) for r in table.unfinished} == {str(p.resolve()) for p in runs.unfinished}


def test_csv_is_exact(runs: Runs) -> None:
    table = report.build_table(report.collect([runs.root]), published=True)
    rows = list(csv.DictReader(io.StringIO(report.to_csv(table))))
    assert len(rows) == len(ROWS) * len(COLUMNS)
    expected = []
    four = lambda v: f"{v:.4f}"  # noqa: E731
    for label in ROWS:
        for pair in COLUMNS:
            values = cell_values(runs, label, pair, "last")
            trials = [trial for trial, _, _ in runs.cells.get((label, pair), [])]
            value = published_value(label, pair)
            teacher_values = [last for last, _ in runs.baselines.get(pair[0], [])]
            student_values = [last for last, _ in runs.baselines.get(pair[1], [])]
            expected.append({
                "metric": "last", "method": label, "protocol": "crd", "teacher": pair[0], "student": pair[1],
                "n": str(len(values)), "mean": four(statistics.mean(values)) if values else "",
                "std": four(statistics.stdev(values)) if len(values) > 1 else "",
                "best": "true" if values and label in best_labels(runs, pair, "last") else "false",
                "trials": ";".join(map(str, trials)),
                "unfinished": "1" if (label, pair) in {("ICD", PAIR_A), ("CRD", PAIR_B)} else "0",
                "teacher_acc": four(statistics.mean(teacher_values)) if teacher_values else "",
                "student_acc": four(statistics.mean(student_values)) if student_values else "",
                "published": "" if value == "missing" else "N/A" if value is None else f"{value:.2f}",
                "diff": four(statistics.mean(values) - value) if values and isinstance(value, float) else "",
            })
    assert rows == expected


def test_json_holds_full_precision_cells_and_flags(runs: Runs) -> None:
    table = report.build_table(report.collect([runs.root]), metric="best")
    payload = json.loads(report.to_json(table))
    assert payload["metric"] == "best" and payload["dataset"] == "cifar100"
    assert payload["trials"] == {"min": 1, "max": 3}
    assert [(c["teacher"], c["student"]) for c in payload["columns"]] == COLUMNS
    assert [row["method"] for row in payload["rows"]] == ROWS
    kd = payload["rows"][0]["cells"][1]
    values = cell_values(runs, "KD", PAIR_A, "best")
    assert kd["values"] == values and kd["n"] == 3 and kd["trials"] == [1, 2, 3]
    assert kd["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
    assert kd["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    single = payload["rows"][ROWS.index("DKD")]["cells"][1]
    assert single["n"] == 1 and single["std"] is None
    missing = payload["rows"][ROWS.index("FitNet")]["cells"][0]
    assert (missing["n"], missing["mean"], missing["best"]) == (0, None, False)
    for col, pair in enumerate(COLUMNS):
        flagged = {row["method"] for row in payload["rows"] if row["cells"][col]["best"]}
        assert flagged == best_labels(runs, pair, "best")
    resnet32x4 = [best for _, best in runs.baselines["resnet32x4"]]
    assert payload["columns"][1]["teacher_acc"]["mean"] == pytest.approx(statistics.mean(resnet32x4))
    assert payload["columns"][0]["student_acc"] is None
    assert len(payload["unfinished_runs"]) == 3


def test_published_columns_and_differences(runs: Runs) -> None:
    table = report.build_table(report.collect([runs.root]), published=True)
    markdown = report.to_markdown(table)
    assert [line for line in markdown.splitlines() if line.startswith("|")] == expected_lines(runs, "last", True)
    assert "Δ = ours − published" in markdown
    # DKD's number comes from the modern entries, CRD's from the seed table, "mymethod" has none.
    dkd = table.rows[ROWS.index("DKD")].cells[1]
    assert dkd.published.top1 == published_value("DKD", PAIR_A)
    assert dkd.diff == pytest.approx(cell_values(runs, "DKD", PAIR_A, "last")[0] - dkd.published.top1)
    assert table.rows[ROWS.index("mymethod")].cells[1].published is None
    payload = report.table_dict(table)
    assert payload["rows"][ROWS.index("DKD")]["cells"][1]["published_source"].startswith("Zhao et al.")
    assert "2407.11802" in payload["rows"][0]["cells"][1]["published_source"]


def test_published_na_and_protocol_matching(tmp_path: Path) -> None:
    built = Runs(tmp_path)
    built.distill("FSP", "fsp", ("wrn_40_2", "wrn_40_1"), 1, beta=50.0)
    built.distill("MLKD", "mlkd", PAIR_A, 1, beta=1.0, protocol="mlkd-strong")
    built.distill("MLKD", "mlkd", PAIR_A, 1, beta=1.0)
    table = report.build_table(report.collect([tmp_path]), published=True)
    assert [row.label for row in table.rows] == ["FSP", "MLKD", "MLKD [mlkd-strong]"]
    fsp = table.rows[0].cells[table.column("wrn_40_2", "wrn_40_1")]
    assert fsp.published.top1 is None and fsp.diff is None  # the README says N/A
    assert "| N/A | — |" in report.to_markdown(table)
    pair_a = table.column(*PAIR_A)
    assert table.rows[1].cells[pair_a].published is None  # MLKD's published number is not a CRD-protocol one
    assert table.rows[2].cells[pair_a].published.top1 == published_value("MLKD", PAIR_A, "mlkd-strong")


def test_best_of_column_marks_ties(tmp_path: Path) -> None:
    for method, trial, acc in (("at", 1, 71.0), ("sp", 1, 71.004), ("pkt", 1, 70.0)):
        config = {"task": "distill", "student": "resnet8x4", "teacher": "resnet32x4", "method": method,
                  "weights": {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}, "dataset": "cifar100", "trial": trial}
        write_run(tmp_path / method, config, [60.0, acc])
    table = report.build_table(report.collect([tmp_path]))
    assert [(row.label, row.cells[0].best) for row in table.rows] == [("AT", True), ("SP", True), ("PKT", False)]
    assert "| AT | **71.00 (1)** |" in report.to_markdown(table)


def test_one_row_never_mixes_weights_or_epoch_budgets(tmp_path: Path) -> None:
    built = Runs(tmp_path)
    built.distill("CRD", "crd", PAIR_A, 1, beta=0.8)
    built.distill("CRD", "crd", PAIR_A, 2, beta=0.8)
    built.distill("CRD", "crd", PAIR_A, 1, beta=1.0)
    table = report.build_table(report.collect([tmp_path]))
    assert [(row.label, row.cells[0].stat.n) for row in table.rows] == [
        ("CRD (r=1, a=0, b=0.8, 4 ep)", 2), ("CRD (r=1, a=0, b=1, 4 ep)", 1)]


def test_method_names() -> None:
    assert report.display_name("crd", alpha=1.0) == "CRD+KD"
    assert report.display_name("kd", alpha=0.9) == "KD"
    assert report.display_name("hint") == "FitNet" and report.display_name("fitnet") == "FitNet"
    assert report.display_name("kd_ls") == "KD+LS"
    assert report.display_name("kd", alpha=0.9, logit_stand=True) == "KD+LS"
    assert report.display_name("dkd", logit_stand=True) == "DKD+LS"
    assert report.display_name("reviewkd") == "ReviewKD" and report.display_name("newthing") == "newthing"


def test_logit_standardisation_option_names_the_row(tmp_path: Path) -> None:
    built = Runs(tmp_path)
    built.distill("KD", "kd", PAIR_A, 1, alpha=0.9, beta=0.0, method_options={"logit_stand": True})
    assert [row.label for row in report.build_table(report.collect([tmp_path])).rows] == ["KD+LS"]


def test_summary_without_accuracies_reads_metrics(tmp_path: Path) -> None:
    config = {"task": "distill", "student": "resnet8x4", "teacher": "resnet32x4", "method": "crd",
              "weights": {"alpha": 0.0, "beta": 0.8}, "dataset": "cifar100", "trial": 1}
    run = write_run(tmp_path / "run", config, [50.0, 70.0, 65.0], summary_keys=())
    with open(run / rundir.METRICS, "a") as handle:
        handle.write('{"epoch": 4, "test_a')  # a line cut by a crash must not break the report
    record = report.read_run(run)
    assert (record.finished, record.last_acc, record.best_acc) == (True, 65.0, 70.0)


def test_errors_name_the_value_and_fix(runs: Runs, tmp_path: Path) -> None:
    records = report.collect([runs.root])
    with pytest.raises(UserError, match="metric 'median' is not supported; choose one of: last, best"):
        report.build_table(records, metric="median")
    with pytest.raises(UserError, match="does not exist"):
        report.collect([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directories"):
        report.collect([tmp_path / "empty"])
    teachers = [r for r in records if r.task == "teacher"]
    with pytest.raises(UserError, match="no distillation runs on cifar100"):
        report.build_table(teachers)
    with pytest.raises(UserError, match="report format 'xls' is not supported"):
        report.write_report([runs.root], fmt="xls")
    table = report.build_table(records)
    with pytest.raises(UserError, match="pair vgg13->resnet8x4 is not in the table"):
        table.column("vgg13", "resnet8x4")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / rundir.CONFIG).write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        report.collect([bad])


def test_write_report_writes_text_and_plots(runs: Runs, tmp_path: Path) -> None:
    out = tmp_path / "out" / "table.csv"
    text = report.write_report([runs.root], fmt="csv", out=out, metric="best", published=True,
                               plots_dir=tmp_path / "plots")
    assert out.read_text() == text
    assert text == report.to_csv(report.build_table(report.collect([runs.root]), metric="best", published=True))
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    pairs = [f"{t}_{s}" for t, s in COLUMNS]
    assert names == sorted([f"bars_{p}.png" for p in pairs] + [f"curves_{p}.png" for p in pairs])


# ----------------------------------------------------------------------------------------- published.json
def parse_seed_readme(text: str) -> list[tuple[list, list, dict]]:
    """Every table of the seed README: (columns, baseline (teacher, student) per column, {row: values})."""
    lines = [line.strip() for line in text.splitlines()]
    tables = []
    for at, line in enumerate(lines):
        if not line.startswith("---|"):
            continue
        start = at - 1
        while lines[start] != "Teacher Student |" and "→" not in lines[start]:
            start -= 1
        if "→" in lines[start]:
            columns = [part.strip() for part in lines[start].split("|") if part.strip()]
        else:
            columns = [tuple(header.rstrip("|").split()) for header in lines[start + 1:at]]
        assert lines[at + 1] == "Teacher Student |"
        baselines = [tuple(float(v) for v in lines[at + 2 + c].rstrip("|").split()) for c in range(len(columns))]
        rows = {}
        row = at + 2 + len(columns)
        while row < len(lines) and lines[row].count("|") == len(columns) + 1:
            name, *values = [part.strip() for part in lines[row].split("|")][:-1]
            rows[name.replace("(ours)", "").strip()] = [None if v == "N/A" else float(v) for v in values]
            row += 1
        tables.append((columns, baselines, rows))
    return tables


README_MODELS = {"wrn-40-2": "wrn_40_2", "wrn-16-2": "wrn_16_2", "wrn-40-1": "wrn_40_1",
                 "ShuffleNetV1": "ShuffleV1", "ShuffleNetV2": "ShuffleV2"}


def test_published_json_matches_every_number_of_the_seed_readme() -> None:
    # shared/ sits beside the repository wherever the tests run (the reference fixtures live there too).
    readme = parse_seed_readme(SEED_README.read_text(encoding="utf-8"))
    data = published_data()
    assert len(readme) == 3
    for (columns, baselines, rows), table in zip(readme[:2], data["seed"]["tables"]):
        assert [[README_MODELS.get(m, m) for m in pair] for pair in columns] == table["pairs"]
        assert [t for t, _ in baselines] == table["teacher_top1"]
        assert [s for _, s in baselines] == table["student_top1"]
        assert list(rows) == [row["method"] for row in table["rows"]]
        assert list(rows.values()) == [row["top1"] for row in table["rows"]]
    columns, baselines, rows = readme[2]
    transfer = data["transfer"]
    assert columns == transfer["columns"]
    assert [t for t, _ in baselines] == transfer["teacher_top1"]
    assert [s for _, s in baselines] == transfer["student_top1"]
    assert rows == {row["method"]: row["top1"] for row in transfer["rows"]}
    numbers = sum(len(v) for _, _, r in readme for v in r.values()) + sum(2 * len(b) for _, b, _ in readme)
    assert numbers == 18 * 7 + 17 * 6 + 9 * 2 + 2 * (7 + 6 + 2)  # every cell parsed, none dropped


def test_published_json_names_its_sources() -> None:
    data = published_data()
    assert "2407.11802" in data["seed"]["source"] and "2407.12073" in data["seed"]["source"]
    assert "top-1 accuracy (%)" in data["values"] and "as published" in data["values"]
    modern = {entry["method"]: entry for entry in data["modern"]}
    assert set(modern) == {"ReviewKD", "DKD", "KD+LS", "MLKD", "MLKD+LS"}
    for entry in modern.values():
        assert (entry["teacher"], entry["student"]) == PAIR_A
        assert "CVPR" in entry["source"] and 70 < entry["top1"] < 80
    assert modern["MLKD"]["protocol"] == "mlkd-strong" and modern["DKD"]["protocol"] == "crd"


def test_write_report_skips_bars_of_a_column_without_finished_runs(tmp_path: Path) -> None:
    built = Runs(tmp_path / "runs")
    built.distill("CRD", "crd", PAIR_A, 1)
    built.distill("CRD", "crd", PAIR_C, 1, status="interrupted")
    for trial in (10, 2):  # trials in numeric order, not text order
        built.distill("KD", "kd", PAIR_A, trial, alpha=0.9, beta=0.0)
    text = report.write_report([built.root], fmt="md", plots_dir=tmp_path / "plots")
    assert "| — † |" in text  # the vgg13 -> vgg8 cell: only an unfinished run
    assert report.build_table(report.collect([built.root])).rows[0].cells[0].trials == [2, 10]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "bars_resnet32x4_resnet8x4.png", "curves_resnet32x4_resnet8x4.png", "curves_vgg13_vgg8.png"]


# ----------------------------------------------------------------------------------------- rows from the registry
def test_a_new_method_needs_no_reporting_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distillers.methods import METHODS, Method
    from distillers.methods.dkd import DKD

    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # registered for this test only
    METHODS.register("zzfresh")(type("ZZFresh", (Method,), {"name": "zzfresh"}))
    METHODS.register("aafresh")(type("AAFresh", (DKD,), {"name": "aafresh"}))  # inherits DKD's row fields
    METHODS.register("ranked")(type("Ranked", (Method,), {"name": "ranked", "display_name": "Ranked+",
                                                          "table_rank": 125}))
    built = Runs(tmp_path)
    for method, alpha in (("zzfresh", 0.0), ("aafresh", 0.0), ("ranked", 0.0), ("unregistered", 0.0),
                          ("kd", 0.9), ("crd", 0.0), ("crd", 1.0), ("fitnet", 1.0), ("zzfresh", 1.0), ("dkd", 0.0)):
        built.distill("-", method, PAIR_A, 1, alpha=alpha)
    labels = [row.label for row in report.build_table(report.collect([tmp_path])).rows]
    # Seed rows in the seed's order; then registered methods by table_rank (FitNet 20, Ranked+ 125, DKD 170), each
    # +KD right after its base; new methods without a rank after every known one, by name; then unregistered ones.
    assert labels == ["KD", "CRD", "CRD+KD", "FitNet+KD", "Ranked+", "DKD", "AAFRESH", "ZZFRESH", "ZZFRESH+KD",
                      "unregistered"]
