"""The seed's command lines (RepDistiller / distillers README) mapped onto the ``distillers`` CLI.

``python train_student.py --path_t ... --distill crd --model_s resnet8x4 -a 0 -b 0.8 --trial 1`` keeps working:
each seed flag is parsed with the seed's name and default, then forwarded; runs are saved under ``./save/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from distillers import cli


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print_freq", type=int, default=100, help="(accepted for compatibility; unused)")
    parser.add_argument("--tb_freq", type=int, default=500, help="(accepted for compatibility; unused)")
    parser.add_argument("--save_freq", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=240)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--lr_decay_epochs", type=str, default="150,180,210")
    parser.add_argument("--lr_decay_rate", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=5e-4)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--dataset", type=str, default="cifar100")
    parser.add_argument("-t", "--trial", type=str, default="1", help="experiment id (-t: the seed's train_teacher.py)")
    parser.add_argument("--data_dir", type=str, default="./data")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument("--resume", action="store_true")


def _forward_common(args: argparse.Namespace, out: str) -> list[str]:
    argv = ["--save-freq", str(args.save_freq), "--batch-size", str(args.batch_size), "--workers",
            str(args.num_workers), "--epochs", str(args.epochs), "--lr-decay-epochs", args.lr_decay_epochs,
            "--lr-decay-rate", str(args.lr_decay_rate), "--weight-decay", str(args.weight_decay), "--momentum",
            str(args.momentum), "--dataset", args.dataset, "--trial", args.trial, "--data-dir", args.data_dir,
            "--device", args.device, "--out", out]
    if args.learning_rate is not None:
        argv += ["--lr", str(args.learning_rate)]
    if args.download:
        argv.append("--download")
    if args.resume:
        argv.append("--resume")
    return argv


def train_teacher(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed-compatible teacher training (see `distillers train-teacher`)")
    _common(parser)
    parser.add_argument("--model", type=str, default="resnet110")
    args = parser.parse_args(argv)
    return cli.main(["train-teacher", "--model", args.model, *_forward_common(args, "./save/models")])


def train_student(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed-compatible distillation (see `distillers distill`)")
    _common(parser)
    parser.add_argument("--init_epochs", type=int, default=30)
    parser.add_argument("--path_t", type=str, required=True, help="teacher checkpoint")
    parser.add_argument("--model_s", type=str, default="resnet8")
    parser.add_argument("--distill", type=str, default="kd")
    # The seed's -r defaults to 1 for every method (so `--distill kd -a 0.9 -b 0` means r=1 there and here); its
    # -a/-b have no usable default, so when omitted the method's seed run-script weights are used.
    parser.add_argument("-r", "--gamma", type=float, default=1.0, help="weight for classification")
    parser.add_argument("-a", "--alpha", type=float, default=None, help="weight balance for KD")
    parser.add_argument("-b", "--beta", type=float, default=None, help="weight balance for other losses")
    parser.add_argument("--kd_T", type=float, default=4)
    parser.add_argument("--feat_dim", type=int, default=128)
    parser.add_argument("--mode", type=str, default="exact", choices=["exact", "relax"])
    parser.add_argument("--nce_k", type=int, default=16384)
    parser.add_argument("--nce_t", type=float, default=0.07)
    parser.add_argument("--nce_m", type=float, default=0.5)
    parser.add_argument("--nce_t_s", type=float, default=0.04, help="RRD student temperature")
    parser.add_argument("--nce_t_t", type=float, default=0.1, help="RRD teacher temperature")
    parser.add_argument("--hint_layer", type=int, default=2, choices=[0, 1, 2, 3, 4])
    args = parser.parse_args(argv)
    argv_out = ["distill", "--teacher", args.path_t, "--student", args.model_s, "--method", args.distill,
                "--init-epochs", str(args.init_epochs), "--kd-T", str(args.kd_T), "--feat-dim", str(args.feat_dim),
                "--mode", args.mode, "--nce-k", str(args.nce_k), "--nce-t", str(args.nce_t), "--nce-m",
                str(args.nce_m), "--nce-t-s", str(args.nce_t_s), "--nce-t-t", str(args.nce_t_t),
                "--hint-layer", str(args.hint_layer),
                *_forward_common(args, "./save/student_model")]
    for flag, value in (("-r", args.gamma), ("-a", args.alpha), ("-b", args.beta)):
        if value is not None:
            argv_out += [flag, str(value)]
    return cli.main(argv_out)


def transfer_student(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Seed-compatible linear-probe transfer (see `distillers transfer`)")
    _common(parser)
    parser.add_argument("--path_s", type=str, required=True, help="distilled student checkpoint")
    parser.add_argument("--model_s", type=str, default=None)
    parser.set_defaults(dataset="stl10", epochs=120, lr_decay_epochs="30,60,90")
    args = parser.parse_args(argv)
    argv_out = ["transfer", "--student-ckpt", args.path_s, *_forward_common(args, "./save/transfer")]
    if args.model_s:
        argv_out += ["--model", args.model_s]
    return cli.main(argv_out)
