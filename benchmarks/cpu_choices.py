"""Which fast-path choice is faster on this CPU? The seed pipeline and each variant of ours, side by side in one run.

``distillers bench`` code (``bench._run_seed`` / ``bench._run_ours``) on synthetic CIFAR-shaped data; each variant is
what ``distill`` runs with those flags. The CPU ``auto`` answers in ``engine.speed.CPU_AUTO`` come from this table
(docs/benchmarks.md). Variants run interleaved, ``--rounds`` times, and the table reports each one's median.

Example: ``python benchmarks/cpu_choices.py --steps 8 --warmup 2 --rounds 2``
"""

from __future__ import annotations

import argparse
import statistics

import torch

from distillers import bench
from distillers.config import MethodOptions

VARIANTS = {  # flags of ours: data path, amp, channels-last
    "device, fp32, NCHW": ("device", "off", "off"),
    "cpu workers, fp32, NCHW": ("cpu", "off", "off"),
    "device, bf16, NCHW": ("device", "on", "off"),
    "device, fp32, channels-last": ("device", "off", "on"),
    "device, bf16, channels-last": ("device", "on", "on"),
    "cpu workers, fp32, channels-last": ("cpu", "off", "on"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["resnet32x4:resnet8x4:kd", "resnet32x4:resnet8x4:crd"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--num-images", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                        help=f"the variants of ours to run (default: all): {'; '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants}
    device = torch.device("cpu")
    images, labels = bench.synthetic_cifar(args.num_images)
    memory = bench.PeakMemory(device)
    print(f"machine: {bench.describe_machine(device)}")
    for case in bench.resolve_cases(args.pairs, None):
        rates: dict[str, list[float]] = {"seed": [], **{name: [] for name in variants}}
        for _ in range(args.rounds):
            settings = bench.Settings(64, args.steps, args.warmup, device, "cpu", "off", "off", False, False,
                                      args.workers, 0, MethodOptions())
            rates["seed"].append(bench._run_seed(case, images, labels, settings, memory)["images_per_s"])
            for name, (path, amp, layout) in variants.items():
                variant = bench.Settings(64, args.steps, args.warmup, device, path, amp, layout, False, False,
                                         args.workers, 0, MethodOptions())
                rates[name].append(bench._run_ours(case, images, labels, variant, memory)["images_per_s"])
                print(f"  {case.label} {case.method} {name}: {rates[name][-1]:.1f} img/s "
                      f"(load {bench._load()})", flush=True)
        seed = statistics.median(rates["seed"])
        print(f"\n{case.label} {case.method}: seed {seed:.1f} img/s")
        print("| variant of ours | img/s | vs seed |\n|---|---:|---:|")
        for name in variants:
            rate = statistics.median(rates[name])
            print(f"| {name} | {rate:.1f} | {rate / seed:.2f}x |")


if __name__ == "__main__":
    main()
