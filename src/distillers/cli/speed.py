"""The bench command: the seed's pipeline and ours side by side (or our KD step beside timm's)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from distillers.cli.arguments import Commands, non_negative_int, positive_int
from distillers.errors import UserError

EPILOG_BENCH = """examples:
  distillers bench                                    (the four default cases, 50 steps)
  distillers bench --pairs resnet32x4:resnet8x4:crd --steps 100
  distillers bench --vs timm                          (our KD step beside timm's LogitDistillationTask)

Prints images/second of each pipeline, their ratio and peak memory; synthetic CIFAR-shaped data. "ours" runs
exactly what `distill` would choose with the same flags (data path, autocast, channels-last, compile)."""

def cmd_bench(args: argparse.Namespace) -> int:
    from distillers.bench import format_table, run_bench

    if args.json and not os.path.isdir(os.path.dirname(args.json) or "."):  # say so before minutes of timing
        raise UserError(f"--json {args.json}: folder {os.path.dirname(args.json)} does not exist")
    if args.vs == "timm":  # our KD step beside timm's LogitDistillationTask (bench_timm.py)
        return _bench_vs_timm(args)
    rows = run_bench(args.pairs, args.methods, args.batch_size, args.steps, args.warmup, args.device, args.data_path,
                     args.amp, args.channels_last, args.compile, args.deterministic, num_images=args.num_images,
                     workers=args.workers,
                     nce_k=args.nce_k, log=lambda line: print(line, file=sys.stderr))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


def _bench_vs_timm(args: argparse.Namespace) -> int:
    from distillers.bench_timm import DEFAULT_STUDENT, DEFAULT_TEACHER, bench_vs_timm, format_result

    teacher, _, student = (args.pairs[0] if args.pairs else f"{DEFAULT_TEACHER}:{DEFAULT_STUDENT}").partition(":")
    result = bench_vs_timm(teacher, student.split(":")[0] or DEFAULT_STUDENT, args.batch_size, steps=args.steps,
                           warmup=args.warmup, device=args.device)
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


def register(commands: Commands) -> None:
    bench = commands.add("bench", cmd_bench, "speed: the seed's pipeline and ours side by side, same models and batch",
                         EPILOG_BENCH)
    bench.add_argument("--pairs", nargs="+", default=None, metavar="TEACHER:STUDENT[:METHOD]",
                       help="cases (default: resnet32x4:resnet8x4 kd and crd, wrn_40_2:wrn_16_2, ResNet50:MobileNetV2)")
    bench.add_argument("--methods", nargs="+", default=None, help="run every pair with each of these methods")
    bench.add_argument("--batch-size", type=positive_int, default=64)
    bench.add_argument("--steps", type=positive_int, default=50, help="timed steps per pipeline")
    bench.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    bench.add_argument("--device", default="auto")
    # "ours" takes distill's fast-path flags and runs what distill would choose with them (engine.speed).
    bench.add_argument("--data-path", choices=["auto", "device", "gpu", "cpu"], default="auto",
                       help="ours: data resident on the training device (device, alias gpu) or DataLoader workers")
    bench.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="ours: bf16 autocast")
    bench.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="same as --amp off")
    bench.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                       help="ours: NHWC memory format")
    bench.add_argument("--no-channels-last", dest="channels_last", action="store_const", const="off",
                       help="same as --channels-last off")
    bench.add_argument("--compile", action="store_true", help="ours with torch.compile (eager fallback)")
    bench.add_argument("--deterministic", action="store_true", help="ours with deterministic algorithms")
    bench.add_argument("--num-images", type=positive_int, default=50000, help="synthetic training images")
    bench.add_argument("--workers", type=non_negative_int, default=None,
                       help="seed pipeline's DataLoader workers (default 8)")
    bench.add_argument("--nce-k", type=positive_int, default=16384, help="CRD negatives per sample")
    bench.add_argument("--json", default=None, help="also write the rows to this file (for docs/benchmarks.md)")
    bench.add_argument("--vs", choices=["seed", "timm"], default="seed",
                       help="timm: our KD step beside timm's LogitDistillationTask (--pairs TIMM_T:TIMM_S)")
