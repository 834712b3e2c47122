"""``python -m distillers.launchers CONFIG.json``: one run of a local parallel sweep, in a process of its own.

The config arrives as the RunConfig's JSON (written by the local launcher), not as a command line to parse again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from distillers.config import RunConfig
from distillers.errors import UserError
from distillers.rundir import read_json


def main(argv: Sequence[str]) -> int:
    """Run the config in ``argv[0]``; a user error is one line and its exit code, as in the CLI."""
    cfg = RunConfig.from_dict(read_json(argv[0]))
    # The first line of the run's log says which GPU it was given (the launcher sets CUDA_VISIBLE_DEVICES).
    print(f"worker pid {os.getpid()} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
    from distillers.tasks import run_task

    try:
        run_task(cfg)
    except UserError as error:
        sys.stderr.write(f"distillers: error: {error}\n")
        return error.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
