"""train-teacher, distill and transfer: flags -> RunConfig -> the task registry (``distillers.tasks.run_task``)."""

from __future__ import annotations

import argparse

from distillers.cli.arguments import Commands
from distillers.cli.run_flags import add_method_flags, add_run_flags, add_source_flags, run_config

EPILOG_TEACHER = """examples:
  distillers train-teacher --model resnet32x4 --dataset cifar100 --download
  distillers train-teacher --model wrn_40_2 --epochs 240 --trial 2 --out runs/"""

EPILOG_DISTILL = """examples:
  distillers distill --teacher save/models/resnet32x4_vanilla/ckpt_epoch_240.pth --student resnet8x4 --method crd
  distillers distill --teacher T.pth --student resnet8x4 --method icd -a 1 -b 1      (ICD+KD)
  distillers distill --teacher T.pth --student resnet8x4 --method kd -r 0.1 -a 0.9 -b 0
  torchrun --nproc_per_node=8 -m distillers distill --teacher T.pth --student resnet8x4 --method crd   (8 GPUs)

The objective is  r * CE + a * KL(T=--kd-T) + b * method.  Without -r/-a/-b the seed's run-script weights for
the method are used (see `distillers list methods`); kdsvd has none in the seed, so 1 is used unless -b is given."""


def cmd_run(args: argparse.Namespace) -> int:
    """The flags become a RunConfig, and the task registry runs it."""
    from distillers.tasks import run_task

    run_task(run_config(args, args.task))
    return 0


def register(commands: Commands) -> None:
    for add_command in (_train_teacher, _distill, _transfer):
        add_command(commands)


def _train_teacher(commands: Commands) -> None:
    teacher = commands.add("train-teacher", cmd_run, "train a model from scratch (a teacher, or a student baseline)",
                           EPILOG_TEACHER)
    teacher.set_defaults(task="teacher")
    teacher.add_argument("--model", required=True, help="architecture (see `distillers list models`)")
    add_run_flags(teacher)


def _distill(commands: Commands) -> None:
    dist = commands.add("distill", cmd_run, "distil a student from a trained teacher", EPILOG_DISTILL)
    dist.set_defaults(task="distill")
    dist.add_argument("--teacher", "--path-t", "--path_t", dest="teacher_path", default=None, action="append",
                      help="teacher checkpoint (ours, RepDistiller's ckpt_epoch_240.pth, or a timm/torchvision "
                           "state dict with --teacher-arch timm:NAME); repeat it for several teachers (logit "
                           "methods; later ones as FILE or ARCH=FILE)")
    dist.add_argument("--teacher-arch", dest="teacher", default=None,
                      help="teacher architecture when the checkpoint does not record it (zoo name, timm:NAME or "
                           "torchvision:NAME)")
    add_source_flags(dist)
    dist.add_argument("--student", "--model-s", "--model_s", dest="student", required=True,
                      help="student architecture")
    dist.add_argument("--method", "--distill", dest="method", required=True,
                      help="distillation method (our name or the seed's, see `distillers list methods`)")
    dist.add_argument("-r", "--gamma", dest="gamma", type=float, default=None, help="weight of cross-entropy")
    dist.add_argument("-a", "--alpha", dest="alpha", type=float, default=None, help="weight of KL(T) (KD)")
    dist.add_argument("-b", "--beta", dest="beta", type=float, default=None, help="weight of the method's loss")
    add_run_flags(dist)
    add_method_flags(dist)


def _transfer(commands: Commands) -> None:
    probe = commands.add("transfer", cmd_run, "linear-probe transfer of a distilled student to STL-10 or TinyImageNet",
                         "example:\n  distillers transfer --student-ckpt runs/S-wrn_16_2_.../last.pt --dataset stl10 "
                         "--download")
    probe.add_argument("--student-ckpt", "--path-s", "--path_s", dest="student_path", required=True,
                       help="distilled student checkpoint")
    probe.add_argument("--model", default=None, help="student architecture (default: recorded in the checkpoint)")
    add_run_flags(probe)
    probe.set_defaults(task="transfer", dataset="stl10", epochs=120, lr_decay_epochs=(30, 60, 90))
