"""``distillers sweep --status OUT``: where each run of the sweeps launched into OUT stands.

The run directories are the source of truth (summary.json); the scheduler adds whether a job is still queued or
running, where it answers. ``OUT/.sweep.json`` records what was launched: each run's launcher, job id and command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillers.errors import UserError
from distillers.launchers.registry import LAUNCHERS, PlannedRun, run_state
from distillers.rundir import CONFIG, SUMMARY, read_json, write_json_atomic

RECORD = ".sweep.json"
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "SUSPENDED", "CONFIGURING"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESIZING"}
ORDER = ("finished", "running", "queued", "interrupted", "failed", "not started")


def write_record(out: Path, launcher: str, runs: list[PlannedRun], jobs: dict[str, str],
                 errors: dict[str, str] | None = None) -> None:
    """Add these runs to OUT's record (a second sweep into the same folder adds its runs; a run launched again
    keeps its newest job id). ``errors``: why runs failed, for those that failed before their run directory."""
    path = Path(out) / RECORD
    record = read_json(path) if path.exists() else {"runs": {}}
    for run in runs:
        entry = {"launcher": launcher, "job": jobs.get(run.name, ""), "command": run.command}
        if errors and run.name in errors:
            entry["error"] = errors[run.name]
        record["runs"][run.name] = entry
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def recorded_runs(out: Path) -> dict[str, dict[str, Any]]:
    """Name -> {launcher, job, command} of the runs launched into OUT; without a record, the run directories."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out} does not exist; give the --out folder of a sweep")
    path = out / RECORD
    if path.exists():
        return dict(read_json(path)["runs"])
    found = {config.parent.name: {"launcher": "", "job": ""} for config in sorted(out.glob(f"*/{CONFIG}"))}
    if not found:
        raise UserError(f"no sweep was launched into {out} ({RECORD} is missing) and it holds no run directories")
    return found


def run_status(run_dir: Path, job: str, states: dict[str, str] | None, error: str = "") -> str:
    """One run's state: the run directory's word, refined by the scheduler's (queued, running) where it answers;
    ``error``: the launcher saw the run fail (before it had a run directory, or with no summary to say so)."""
    disk = run_state(run_dir)
    if disk == "finished":
        return "finished"
    scheduler = (states or {}).get(job) if job else None
    if scheduler in QUEUED:
        return "queued"
    if scheduler in RUNNING:
        return "running"
    if disk in ("running", "not started") and states is not None and job and scheduler is not None:
        return "failed"  # the job ended (FAILED, CANCELLED, TIMEOUT, ...) without the run saying so: killed, or
        # stopped before its run directory existed
    if disk == "running" and states is not None and job:  # the job left the queue without the run saying so
        return "failed"
    return "failed" if error and disk in ("not started", "running") else disk


def last_error(run_dir: Path, entry: dict[str, Any], scheduler: str | None) -> str:
    """summary.json's ``reason``, else what the launcher recorded, else where the job's log is."""
    try:
        reason = str(read_json(run_dir / SUMMARY).get("reason") or "").strip()
    except (OSError, ValueError):
        reason = ""
    reason = reason or str(entry.get("error") or "").strip()
    if not reason and entry.get("launcher") and entry.get("job"):
        reason = LAUNCHERS.get(entry["launcher"]).last_error(run_dir.parent, entry["job"])
    if reason:
        return reason.splitlines()[-1]
    return f"the job ended ({scheduler or 'no longer queued'}) without recording why"


def status_lines(out: Path) -> list[str]:
    """The table printed by ``--status``: one line per run, an error line under each failed run, then the counts."""
    out = Path(out)
    runs = recorded_runs(out)
    states: dict[str, dict[str, str] | None] = {}
    for launcher in {entry.get("launcher") for entry in runs.values()} - {""}:
        jobs = [entry["job"] for entry in runs.values() if entry.get("launcher") == launcher and entry.get("job")]
        states[launcher] = LAUNCHERS.get(launcher).scheduler_states(jobs) if jobs else None
    lines, counts = [], dict.fromkeys(ORDER, 0)
    for name, entry in runs.items():
        job, answered = entry.get("job", ""), states.get(entry.get("launcher", ""))
        status = run_status(out / name, job, answered, entry.get("error", ""))
        counts[status] = counts.get(status, 0) + 1
        scheduler = (answered or {}).get(job, "-") if job else "-"
        lines.append(f"{status:12s} {job or '-':>12s}  {scheduler:10s} {name}")
        if status == "failed":
            lines.append(f"{'':12s} last error: {last_error(out / name, entry, scheduler)}")
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items() if count))
    if any(entry.get("job") for entry in runs.values()) and all(answer is None for answer in states.values()):
        lines.append("(no scheduler answered: states come from the run directories alone)")
    return lines
