"""Run a distillation from Python: the RunConfig the command line would build, given to the entry point it uses.

``python examples/run_from_python.py T.pth`` distils resnet8x4 from the teacher checkpoint ``T.pth`` with KD and the
seed's defaults, writing the usual run directory under ``./runs``.
"""

from __future__ import annotations

import sys
from typing import Any

from distillers.config import RunConfig
from distillers.tasks import run_task


def distil(teacher_path: str, student: str = "resnet8x4", method: str = "kd", **settings: Any) -> dict[str, Any]:
    """One run; ``settings`` are RunConfig fields (``epochs=``, ``dataset=``, ``out=``, ...). Returns its summary."""
    cfg = RunConfig(task="distill", teacher_path=teacher_path, student=student, method=method, **settings)
    return run_task(cfg)


if __name__ == "__main__":
    summary = distil(sys.argv[1])
    print(f"{summary['status']}: test top-1 {summary['last_acc']:.2f}% after {summary['epochs_done']} epochs")
