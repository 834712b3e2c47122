"""`distillers sweep --launcher slurm` against a real one-node SLURM (scripts/slurm-local.sh): a job array with
--wait, the status command, and a preempted job that is requeued and resumes from its checkpoint."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from distillers.config import RunConfig
from distillers.launchers.job import RunJob
from distillers.rundir import distill_run_name

from .conftest import TEACHER, TINY, read_jsonl, sweep

pytestmark = pytest.mark.slow


def squeue_state(job_id: str) -> str:
    result = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"],
                            capture_output=True, text=True, timeout=30, check=True)
    states = dict(line.split("|", 1) for line in result.stdout.split())
    return states.get(job_id, "")


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 1.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def test_grid_runs_as_a_job_array_and_reports(tmp_path, capsys, slurm, tiny_cifar, teacher_dir, monkeypatch):
    monkeypatch.setattr("distillers.launchers.slurm.POLL_S", 1.0)
    out = tmp_path / "runs"
    code, text, err = sweep(capsys, "--launcher", "slurm", "--wait", "--cpus-per-job", "1", "--time", "10",
                            "--pairs", f"{TEACHER}:resnet8", "--methods", "kd", "crd", "--trials", "2",
                            "--teacher-dir", teacher_dir, "--out", out, "--", "--epochs", "1",
                            "--max-steps-per-epoch", "2", "--data-dir", tiny_cifar.root, *TINY)
    assert code == 0, err
    names = [distill_run_name("resnet8", TEACHER, "cifar100", method, gamma, alpha, beta, trial)
             for method, gamma, alpha, beta in (("kd", 0.1, 0.9, 0), ("crd", 1, 0, 0.8)) for trial in (1, 2)]
    for name in names:
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["epochs_done"] == 1
    record = json.loads((out / ".sweep.json").read_text())["runs"]
    jobs = sorted(record[name]["job"] for name in names)
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_{index}" for index in range(4)]  # one task of one array per run
    assert all((out / ".slurm" / job).is_dir() for job in jobs)  # submitit's pickles and logs under OUT/.slurm
    assert f"submitted 4 run(s) as SLURM job {array}" in text and f"distillers sweep --status {out}" in text
    assert "| KD |" in text and "| CRD |" in text  # the report, once every run ended
    code, text, _ = sweep(capsys, "--status", out)
    assert code == 0 and text.splitlines()[-1] == "4 finished"
    assert sum(line.startswith("finished") for line in text.splitlines()) == 4


@pytest.mark.parametrize("interrupt", [
    ["scancel", "--signal=USR2"],  # SLURM's warning before a time limit or a preemption: submitit requeues the job
    ["scontrol", "requeue"],  # SLURM requeues the job itself (SIGTERM to the run), as PreemptMode=REQUEUE does
], ids=["usr2", "scontrol-requeue"])
def test_interrupted_job_is_requeued_and_resumes(tmp_path, capsys, slurm, tiny_cifar, teacher_dir, interrupt):
    """Mid-run, the trainer checkpoints at a step boundary; the job is requeued and the requeued job resumes from
    that checkpoint: every epoch is in metrics.jsonl once and the run finishes."""
    out, epochs = tmp_path / "runs", 10  # epochs enough that the signal lands mid-run even on a fast machine
    code, _, err = sweep(capsys, "--launcher", "slurm", "--cpus-per-job", "1", "--time", "10", "--pairs",
                         f"{TEACHER}:resnet8", "--methods", "kd", "--trials", "1", "--teacher-dir", teacher_dir,
                         "--out", out, "--", "--epochs", str(epochs), "--max-steps-per-epoch", "4", "--data-dir",
                         tiny_cifar.root, *TINY)
    assert code == 0, err
    name = distill_run_name("resnet8", TEACHER, "cifar100", "kd", 0.1, 0.9, 0, 1)
    run_dir, job = out / name, json.loads((out / ".sweep.json").read_text())["runs"][name]["job"]
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(read_jsonl(metrics)) >= 1, 300, "the first epoch", poll_s=0.1)
    subprocess.run([*interrupt, job], check=True, timeout=30)
    # SLURM holds a requeued job for two minutes (BeginTime); let it start again at once.
    wait_for(lambda: squeue_state(job) == "PENDING", 120, "the job to be requeued")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
    wait_for(lambda: squeue_state(job) not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"), 300,
             "the requeued job to end")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == epochs
    assert [record["epoch"] for record in read_jsonl(metrics)] == list(range(1, epochs + 1))
    logs = "".join(path.read_text() for path in (out / ".slurm" / job).glob("*_log.*"))
    assert f"resuming {run_dir} from main epoch" in logs
    if interrupt[0] == "scancel":
        assert "Requeued job" in logs  # submitit's checkpoint-and-requeue, after the run saved its checkpoint


def test_failed_or_finished_runs_are_not_requeued(tmp_path):
    """submitit requeues only when ``checkpoint`` returns a call; a run that ended (a user error) gets none."""
    cfg = RunConfig(task="distill", out=str(tmp_path), name="run")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"checkpoint")
    for status, requeued in (("failed", False), ("finished", False), ("interrupted", True)):
        (run_dir / "summary.json").write_text(json.dumps({"status": status}))
        delayed = RunJob().checkpoint(cfg)
        assert (delayed is not None) == requeued, status
    assert delayed.args[0].resume and not delayed.args[0].overwrite  # the requeued run resumes from last.pt


def test_unknown_slurm_option_is_one_line_naming_valid_keys(tmp_path, capsys, slurm):
    code, _, err = sweep(capsys, "--launcher", "slurm", "--slurm-opt", "constrant=a100", "--pairs",
                         f"{TEACHER}:resnet8", "--methods", "kd", "--trials", "1", "--out", tmp_path / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "constrant" in err and "constraint" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written or submitted
