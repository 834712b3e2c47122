"""The SLURM launcher: every run of the sweep is one task of a job array, submitted through submitit.

Submitting returns at once (job ids and the status command are printed); ``--wait`` follows the runs with a progress
bar until each has ended. Jobs are preemption-safe (``distillers.launchers.job``). Without slurmdbd, ``sacct`` (what
submitit asks) knows nothing, so the run directories say how a run ended and ``squeue`` whether its job is still
queued or running.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import io
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from distillers.cli.arguments import positive_int
from distillers.errors import UserError
from distillers.launchers.registry import LAUNCHERS, Launcher, PlannedRun, run_state

POLL_S = 5.0
DEFAULT_TIME_MIN = 24 * 60  # submitit's default (5 minutes) would stop every real run
# squeue states of a job that has not ended (it may still run, or run again).
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT", "RESV_DEL_HOLD"}


def slurm_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for submitit's SlurmExecutor (``constraint=volta32gb``, ``exclude=node7``,
    ``signal_delay_s=120``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), int(raw) if raw.strip().isdigit() else raw


@LAUNCHERS.register("slurm")
class SlurmLauncher(Launcher):
    """One job-array task per run; see the module docstring."""

    name = "slurm"
    flags = (("partition", "--partition"), ("gpus_per_job", "--gpus-per-job"), ("cpus_per_job", "--cpus-per-job"),
             ("mem_gb", "--mem"), ("time_min", "--time"), ("account", "--account"), ("qos", "--qos"),
             ("max_parallel", "--max-parallel"), ("slurm_opt", "--slurm-opt"), ("wait", "--wait"))

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("--launcher slurm: a job array through submitit (docs/cluster.md)")
        group.add_argument("--partition", default=None, help="SLURM partition")
        group.add_argument("--gpus-per-job", type=positive_int, default=None, metavar="N",
                           help="GPUs of each run's job")
        group.add_argument("--cpus-per-job", type=positive_int, default=None, metavar="N",
                           help="CPUs of each run's job (give --workers + 1 or more)")
        group.add_argument("--mem", dest="mem_gb", type=positive_int, default=None, metavar="GB",
                           help="memory of each job")
        group.add_argument("--time", dest="time_min", type=positive_int, default=None, metavar="MINUTES",
                           help=f"time limit of each job (default {DEFAULT_TIME_MIN}); a run that reaches it saves a "
                                "checkpoint and is requeued")
        group.add_argument("--account", default=None, help="SLURM account")
        group.add_argument("--qos", default=None, help="SLURM quality of service")
        group.add_argument("--max-parallel", type=positive_int, default=None, metavar="N",
                           help="at most N runs of the array at once")
        group.add_argument("--slurm-opt", action="append", type=slurm_option, default=None, metavar="KEY=VALUE",
                           help="any other parameter of submitit's SlurmExecutor, repeatable (e.g. constraint=a100)")
        group.add_argument("--wait", action="store_true",
                           help="wait (with a progress bar) until every run has ended, then print the report")

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.jobs: list[Any] = []
        self.runs: list[PlannedRun] = []
        self._executor: Any = None

    def parameters(self) -> dict[str, Any]:
        """The executor's parameters from the flags (``--slurm-opt`` last, so it can override any of them)."""
        args = self.args
        values = {"job_name": "distillers", "time": args.time_min or DEFAULT_TIME_MIN, "partition": args.partition,
                  "gpus_per_node": args.gpus_per_job, "cpus_per_task": args.cpus_per_job, "account": args.account,
                  "qos": args.qos, "mem": f"{args.mem_gb}G" if args.mem_gb else None,
                  "array_parallelism": args.max_parallel}
        params = {key: value for key, value in values.items() if value is not None}
        params.update(dict(args.slurm_opt or ()))
        return params

    def executor(self, out: Path) -> Any:
        import submitit

        try:
            executor = submitit.SlurmExecutor(folder=out / ".slurm" / "%j")
        except RuntimeError as error:  # no srun on this machine
            raise UserError(f"--launcher slurm needs SLURM's commands here ({error}); run on a login node, or use "
                            f"--launcher local") from None
        try:
            executor.update_parameters(**self.parameters())
        except ValueError as error:
            raise UserError(one_line_parameter_error(str(error))) from None
        return executor

    def prepare(self, out: Path) -> None:
        self._executor = self.executor(out)

    def launch(self, runs: list[PlannedRun], out: Path) -> dict[str, str]:
        from submitit.core.utils import FailedJobError

        from distillers.launchers.job import RunJob

        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's error; it is raised below
                self.jobs = self._executor.map_array(RunJob(), [run.cfg for run in runs])
        except FailedJobError as error:  # sbatch refused (bad partition, account, limits): its message, one line
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise UserError(f"SLURM refused the jobs: {lines[-1] if lines else 'no reason given'}") from None
        self.runs = runs
        ids = [job.job_id for job in self.jobs]
        array = ids[0].split("_")[0]
        print(f"submitted {len(ids)} run(s) as SLURM job {array} ({ids[0]} .. {ids[-1]}); logs in {out / '.slurm'}")
        print(f"status: distillers sweep --status {out}", flush=True)
        return {run.name: job.job_id for run, job in zip(runs, self.jobs)}

    def wait(self, out: Path) -> None:
        if not self.args.wait or not self.jobs:
            return
        try:
            self._wait()
        except KeyboardInterrupt:
            error = UserError(f"stopped waiting; the jobs go on (distillers sweep --status {out})")
            error.exit_code = 130
            raise error from None

    def waited(self) -> bool:
        return bool(self.args.wait)

    def failed(self) -> int:
        return sum(run_state(run.run_dir) != "finished" for run in self.runs) if self.args.wait else 0

    def _wait(self) -> None:
        """Until every job has left the queue (squeue), or submitit says it is done where squeue does not answer."""
        from tqdm import tqdm

        ended: set[str] = set()
        with tqdm(total=len(self.jobs), desc="runs ended", unit="run") as bar:
            while len(ended) < len(self.jobs):
                states = self.scheduler_states([job.job_id for job in self.jobs])
                for job in self.jobs:
                    if job.job_id not in ended and job_ended(job, states):
                        ended.add(job.job_id)
                        bar.update(1)
                if len(ended) < len(self.jobs):
                    time.sleep(POLL_S)

    @staticmethod
    def last_error(out: Path, job_id: str) -> str:
        """The last line the job wrote to stderr (its exception), skipping srun's own notes."""
        for log in sorted((out / ".slurm" / job_id).glob("*_log.err"), reverse=True):
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if line.strip() and not line.startswith(("srun:", "slurmstepd:"))]
            if lines:
                return lines[-1].removeprefix("distillers.errors.UserError: ") + f" (log: {log})"
        return ""

    @staticmethod
    def scheduler_states(job_ids: list[str]) -> dict[str, str] | None:
        """squeue's state of each of this user's jobs it still knows, by job id (``123_4`` for array tasks)."""
        try:
            result = subprocess.run(["squeue", "--user", getpass.getuser(), "--noheader", "--array", "--states=all",
                                     "--format=%i|%T"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode != 0:
            return None
        states = dict(line.strip().split("|", 1) for line in result.stdout.splitlines() if "|" in line)
        wanted = set(job_ids)
        return {job_id: state for job_id, state in states.items() if job_id in wanted}


def job_ended(job: Any, states: dict[str, str] | None) -> bool:
    """A job has ended when the scheduler lists it in no active state (a requeued job is PENDING again)."""
    if states is None:
        return job.done()
    return states.get(job.job_id) not in ACTIVE


def one_line_parameter_error(message: str) -> str:
    """submitit's ``Unavailable parameter(s): [...]`` plus its list of valid ones, as one line."""
    lines = message.splitlines()
    valid = [match.group(1) for line in lines if (match := re.match(r"\s*- (\w+)", line))]
    head = lines[0] if lines else message
    return f"--slurm-opt: {head}" + (f"; valid keys: {', '.join(valid)}" if valid else "")
