"""The sweep command: the grid of runs behind the seed's tables, on this machine or a SLURM cluster."""

from __future__ import annotations

import argparse

from distillers.cli.arguments import Commands, positive_int
from distillers.cli.run_flags import sweep_base_config

EPILOG_SWEEP = """examples:
  distillers sweep --dry-run                                  (the seed's 13 pairs x 18 rows x 3 trials)
  distillers sweep --pairs resnet32x4:resnet8x4 --methods kd crd crd+kd --trials 3

Finished runs are skipped, interrupted ones resumed; teachers are read from
--teacher-dir/<name>_vanilla/ckpt_epoch_240.pth (distillers fetch-teachers). Flags after -- go to every run
(e.g. -- --epochs 240 --data-dir data).

On a SLURM cluster or several GPUs (docs/cluster.md):
  distillers sweep --launcher slurm --partition gpu --gpus-per-job 1 --cpus-per-job 4 --time 720 -- --data-dir data
  distillers sweep --status runs
  distillers sweep --launcher local --gpus 0,1,2,3"""

def cmd_sweep(args: argparse.Namespace) -> int:
    """The flags after ``--`` become the base RunConfig of every run of the grid."""
    from distillers.sweep import run_sweep

    extra = [flag for flag in args.extra if flag != "--"]
    return run_sweep(args, None if args.status else sweep_base_config(extra), extra)


def register(commands: Commands) -> None:
    grid = commands.add("sweep", cmd_sweep, "run (or print) the grid of runs behind the seed's tables, then report",
                        EPILOG_SWEEP)
    grid.add_argument("--pairs", nargs="+", default=None, metavar="TEACHER:STUDENT",
                      help="pairs to run (default: the seed's 13)")
    grid.add_argument("--methods", nargs="+", default=None, help="rows (default: the seed's 18; METHOD+kd adds KD)")
    grid.add_argument("--trials", type=positive_int, default=3)
    grid.add_argument("--teacher-dir", default="save/models")
    grid.add_argument("--out", default="runs")
    grid.add_argument("--dataset", default="cifar100")
    grid.add_argument("--baselines", action="store_true", help="also train each student from scratch")
    grid.add_argument("--dry-run", action="store_true", help="print the commands and what would be skipped")
    grid.add_argument("--status", default=None, metavar="OUT",
                      help="where each run launched into OUT stands, then stop")
    from distillers.launchers import add_launcher_flags

    add_launcher_flags(grid)
    grid.add_argument("extra", nargs=argparse.REMAINDER, help="flags passed to every run, after --")
