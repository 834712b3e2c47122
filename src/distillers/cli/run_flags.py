"""The flags of training commands (train-teacher, distill, transfer, and the runs of a sweep) and the RunConfig
they become. Defaults are the seed's; the groups below are what ``--help`` shows."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from distillers.cli.arguments import OneLineErrors, epoch_list, key_value, positive_float, positive_int, tracker_names
from distillers.config import MethodOptions, RunConfig


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every training task shares (the seed's defaults)."""
    for add_group in (_data_flags, _optimisation_flags, _run_control_flags, _process_flags, _tracker_flags):
        add_group(parser)


def _data_flags(parser: argparse.ArgumentParser) -> None:
    """Which data, where, and how batches are made."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cifar100", help="dataset name (see `distillers list datasets`)")
    data.add_argument("--data-dir", default="./data", help="where datasets live (downloaded there with --download)")
    data.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    data.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    data.add_argument("--augment", choices=["standard", "strong"], default="standard",
                      help="strong adds a second RandAugment+Cutout view per image (MLKD's protocol)")
    data.add_argument("--data-path", choices=["auto", "device", "gpu", "cpu"], default="auto",
                      help="device (alias gpu) keeps CIFAR-sized data on the training device and augments there; cpu: "
                           "DataLoader workers; auto: device on CUDA when the data fit, on CPU what the bench measured "
                           "faster (docs/benchmarks.md)")
    data.add_argument("--input-size", type=positive_int, default=None,
                      help="image side the models see (--dataset imagefolder; default 32)")


def _optimisation_flags(parser: argparse.ArgumentParser) -> None:
    """SGD and the step schedule."""
    optim = parser.add_argument_group("optimisation (seed defaults)")
    optim.add_argument("--epochs", type=positive_int, default=240, help="training epochs")
    optim.add_argument("--batch-size", type=positive_int, default=64, help="batch size")
    optim.add_argument("--lr", type=positive_float, default=None,
                       help="learning rate (default 0.05; 0.01 for MobileNetV2/ShuffleV1/ShuffleV2)")
    optim.add_argument("--lr-decay-epochs", type=epoch_list, default=(150, 180, 210),
                       help="epochs after which the lr is multiplied by --lr-decay-rate")
    optim.add_argument("--lr-decay-rate", type=positive_float, default=0.1, help="lr decay factor")
    optim.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")

def _run_control_flags(parser: argparse.ArgumentParser) -> None:
    """Naming, resuming and the fast path's choices."""
    run = parser.add_argument_group("run")
    run.add_argument("--out", default="./runs", help="parent folder of run directories")
    run.add_argument("--name", default=None, help="run-directory name (default: derived from the settings)")
    run.add_argument("--trial", default="1", help="experiment id to tell repeated runs apart")
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--resume", action="store_true", help="continue the run in its directory from last.pt")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    run.add_argument("--save-freq", type=int, default=40, help="also keep ckpt_epoch_N.pt every N epochs")
    run.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                     help="bf16 autocast with float32 master weights (auto: on for GPUs with native bf16; on: also on "
                          "CPU)")
    run.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                     help="NHWC memory format for models and batches (auto: on CUDA)")
    run.add_argument("--compile", action="store_true", help="torch.compile the models (eager fallback on failure)")
    run.add_argument("--deterministic", action="store_true",
                     help="deterministic cuDNN and torch algorithms, no cudnn.benchmark: bitwise-repeatable GPU runs "
                          "and resumes, at some speed")
    run.add_argument("--max-steps-per-epoch", type=positive_int, default=None,
                     help="cap the steps of each epoch (smoke tests)")

def _process_flags(parser: argparse.ArgumentParser) -> None:
    """Several processes under torchrun."""
    ddp = parser.add_argument_group("several processes (torchrun --nproc_per_node=N -m distillers ...; "
                                    "docs/distributed.md)")
    ddp.add_argument("--lr-scaling", choices=["linear", "none"], default="linear",
                     help="linear: lr x number of processes, as the global batch grows with them (--batch-size is "
                          "per process); none: use --lr as given")
    ddp.add_argument("--sync-bn", action="store_true",
                     help="BatchNorm statistics over the global batch (SyncBatchNorm; needs GPUs)")

def _tracker_flags(parser: argparse.ArgumentParser) -> None:
    """Experiment trackers besides the run directory's own files."""
    track = parser.add_argument_group("experiment trackers (metrics.jsonl and summary.json are always written)")
    track.add_argument("--log", type=tracker_names, default=("tensorboard",), metavar="TRACKERS",
                       help="comma-separated: tensorboard, mlflow, wandb, or none (default: tensorboard); mlflow and "
                            "wandb are extras: pip install 'distillers[mlflow,wandb]'")
    track.add_argument("--log-project", default=None, help="MLflow experiment / W&B project (default: distillers)")
    track.add_argument("--mlflow-uri", default=None,
                       help="MLflow tracking URI (default: sqlite:///<out>/mlflow.db, which works offline)")

def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of external models (timm:NAME, torchvision:NAME) and folder datasets (models/sources.py)."""
    group = parser.add_argument_group("your own model and data")
    group.add_argument("--teacher-weights", default=None, metavar="FILE",
                       help="teacher weights: a timm/torchvision state dict, .safetensors or our checkpoint")
    group.add_argument("--student-weights", default=None, metavar="FILE", help="initial weights of the student")
    group.add_argument("--pretrained", nargs="?", const="teacher", choices=["teacher", "student", "both"],
                       default=None, help="download the library's published weights (default: the teacher's)")
    group.add_argument("--reset-head", action="store_true",
                       help="give a student whose weights have another class count a new head")
    group.add_argument("--teacher-weighting", default="mean", metavar="mean|W1,W2,...",
                       help="several teachers: average their logits, or weigh them (one weight per --teacher)")


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """The shared hyper-parameters (the seed's flags) and ``--method-opt`` for a method's own typed options."""
    defaults = MethodOptions()
    group = parser.add_argument_group("method hyper-parameters (seed defaults)")
    group.add_argument("--kd-T", "--kd_T", dest="kd_T", type=positive_float, default=defaults.kd_T,
                       help="KD temperature")
    group.add_argument("--feat-dim", "--feat_dim", dest="feat_dim", type=positive_int, default=defaults.feat_dim,
                       help="embedding size of the CRD/CC/ICD/RRD heads")
    group.add_argument("--nce-k", "--nce_k", dest="nce_k", type=positive_int, default=defaults.nce_k,
                       help="CRD negatives per sample / RRD queue length")
    group.add_argument("--nce-t", "--nce_t", dest="nce_t", type=positive_float, default=defaults.nce_t,
                       help="CRD temperature")
    group.add_argument("--nce-m", "--nce_m", dest="nce_m", type=float, default=defaults.nce_m,
                       help="CRD memory momentum")
    group.add_argument("--mode", choices=["exact", "relax"], default=defaults.mode, help="CRD negative sampling")
    group.add_argument("--nce-t-s", dest="nce_t_s", type=positive_float, default=defaults.nce_t_s,
                       help="RRD student temperature")
    group.add_argument("--nce-t-t", dest="nce_t_t", type=positive_float, default=defaults.nce_t_t,
                       help="RRD teacher temperature")
    group.add_argument("--hint-layer", "--hint_layer", dest="hint_layer", type=int, default=defaults.hint_layer,
                       choices=[0, 1, 2, 3, 4], help="FitNet feature index")
    group.add_argument("--init-epochs", "--init_epochs", dest="init_epochs", type=int,
                       default=defaults.init_epochs, help="initialisation-stage epochs of AB/FT/FSP")
    group.add_argument("--method-opt", dest="method_opt", type=key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="method-specific option, repeatable (e.g. beta=8 for dkd)")


def run_config(args: argparse.Namespace, task: str) -> RunConfig:
    """Turn parsed flags into the typed RunConfig saved with the run (every flag named like a field sets it)."""
    fields = {field.name for field in dataclasses.fields(RunConfig)} - {"task", "method_options"}
    cfg = RunConfig(task=task, **{key: value for key, value in vars(args).items() if key in fields})
    if isinstance(cfg.teacher_path, list):  # --teacher repeated: the first, then the others
        cfg.teacher_path, cfg.extra_teachers = cfg.teacher_path[0], tuple(cfg.teacher_path[1:])
    if hasattr(args, "kd_T"):
        cfg.method_options = MethodOptions(
            kd_T=args.kd_T, feat_dim=args.feat_dim, nce_k=args.nce_k, nce_t=args.nce_t, nce_m=args.nce_m,
            mode=args.mode, nce_t_s=args.nce_t_s, nce_t_t=args.nce_t_t, hint_layer=args.hint_layer,
            init_epochs=args.init_epochs, extra=dict(args.method_opt))
    return cfg


def sweep_base_config(extra: Sequence[str]) -> RunConfig:
    """The flags after ``sweep --``, parsed once with distill's run and method flags: the config every run of the
    grid derives from (the sweep sets each run's teacher, student, method, weights, trial, dataset and out)."""
    parser = OneLineErrors(prog="distillers sweep ... --", allow_abbrev=False)
    add_run_flags(parser)
    add_method_flags(parser)
    return run_config(parser.parse_args(extra), "distill")
