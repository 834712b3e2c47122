"""Seed pipeline vs ours, side by side in one process: ``python benchmarks/run_bench.py --help``.

A thin wrapper around ``distillers.bench.run_bench`` (``distillers bench`` runs the same code); prints the markdown
table for ``docs/benchmarks.md`` and, with ``--json``, writes the rows.
"""

from __future__ import annotations

import argparse
import json
import sys

from distillers.bench import format_table, run_bench
from distillers.data.gpu_loader import DATA_PATHS
from distillers.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=None, metavar="TEACHER:STUDENT[:METHOD]",
                        help="cases to run (default: resnet32x4:resnet8x4 kd and crd, wrn_40_2:wrn_16_2, "
                             "ResNet50:MobileNetV2)")
    parser.add_argument("--methods", nargs="+", default=None, help="run every pair with each of these methods")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per pipeline")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before timing")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--data-path", choices=DATA_PATHS, default="auto", help="ours: gpu (data resident on the training device) or cpu (DataLoader workers)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="ours without bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="ours with torch.compile (falls back to eager)")
    parser.add_argument("--num-images", type=int, default=50000, help="synthetic CIFAR-shaped training images")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(8, CPUs))")
    parser.add_argument("--nce-k", type=int, default=16384, help="CRD negatives per sample")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    try:
        rows = run_bench(args.pairs, args.methods, args.batch_size, args.steps, args.warmup, args.device,
                         args.data_path, args.amp, args.channels_last, args.compile, num_images=args.num_images,
                         workers=args.workers, nce_k=args.nce_k, log=lambda line: print(line, file=sys.stderr))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return UserError.exit_code
    print(" ".join(["$", "python", "benchmarks/run_bench.py", *(argv if argv is not None else sys.argv[1:])]))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
