"""What runs inside a SLURM job: one RunConfig, resumed from its checkpoint when it left one; preemption-safe.

submitit runs ``RunJob()(cfg)`` in the job, after installing its own SIGUSR2 handler (the signal SLURM sends
``signal_delay_s`` before the time limit, ``--signal=USR2@90``, and which a preempting scheduler can send). The two
handlers take turns:

- while the run trains, the engine's StopSignals holds SIGUSR2 (as SIGINT and SIGTERM): the trainer saves a checkpoint
  at the next step boundary and the run raises ``RunInterrupted`` with ``signal == 'SIGUSR2'``. Leaving the run puts
  submitit's handler back, and ``RunJob`` raises the signal again, so submitit does what it does for a checkpointable
  callable: it calls ``checkpoint(cfg)``, pickles the call returned, ``scontrol requeue``s the job and exits;
- outside the training loop (data loading: the engine ends the run at once; between runs) submitit's handler runs
  directly, with the same result.

The requeued job runs ``RunJob()(cfg)`` again: last.pt exists, so the run resumes and loses no finished epoch (nor,
when the trainer checkpointed mid-epoch, any step). A job SLURM requeues by itself (``scontrol requeue``, a node
failure, PreemptMode=REQUEUE: SIGTERM, which StopSignals also turns into a checkpoint) reruns its first pickle; the
same look at the run directory makes it resume. A run that failed (a user error, a crash) is never requeued.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from distillers.config import RunConfig
from distillers.launchers.registry import continued, run_state
from distillers.rundir import SUMMARY, read_json


def preempt_signal() -> signal.Signals:
    """The signal submitit checkpoints on (SUBMITIT_PREEMPT_SIGNAL, USR2 unless set)."""
    from submitit import JobEnvironment

    return signal.Signals["SIG" + JobEnvironment.USR_SIG]


class RunJob:
    """submitit's job function for one run of a sweep (``__call__`` and ``checkpoint``, its Checkpointable protocol)."""

    def __call__(self, cfg: RunConfig) -> dict[str, Any]:
        """Run ``cfg`` (resuming when its directory holds a checkpoint) and return its summary."""
        from distillers.engine.signals import RunInterrupted
        from distillers.tasks import run_task

        run_dir = Path(cfg.out) / str(cfg.name)
        if run_state(run_dir) == "finished":  # a requeue that raced the run's last write: nothing left to do
            return read_json(run_dir / SUMMARY)
        _threads_from_slurm()
        try:
            return run_task(continued(cfg, run_dir))
        except RunInterrupted as stop:
            preempt = preempt_signal()
            if stop.signal == preempt.name and callable(signal.getsignal(preempt)):
                # The checkpoint is saved; submitit's handler (back in place) requeues the job and exits.
                signal.raise_signal(preempt)
            raise

    def checkpoint(self, cfg: RunConfig) -> Any:
        """Called by submitit on the preemption signal: the same run, to resume; None (no requeue) once it ended."""
        from submitit.helpers import DelayedSubmission

        run_dir = Path(cfg.out) / str(cfg.name)
        if run_state(run_dir) in ("finished", "failed"):
            return None
        return DelayedSubmission(self, continued(cfg, run_dir))


def _threads_from_slurm() -> None:
    """Use the CPUs SLURM gave the job, not every core of the node (task/none pins nothing)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))
