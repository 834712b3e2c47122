"""Seed pipeline vs ours, side by side in one process: the same code as ``distillers bench`` (see its ``--help``).

Example: ``python benchmarks/run_bench.py --pairs resnet32x4:resnet8x4:kd --steps 100 --json rows.json``
"""

from __future__ import annotations

import sys

from distillers.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
