"""The ``distillers`` command line: subcommands -> RunConfig -> task.

Every error a user can cause ends in one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from distillers.config import MethodOptions, RunConfig
from distillers.errors import UserError
from distillers.plugins import load_plugins

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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def epoch_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 150,180,210, got {text!r}") \
            from None
    return values


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as two strings: the value is typed later against the method's declared option."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    return key, raw


def tracker_names(text: str) -> tuple[str, ...]:
    """``--log tensorboard,mlflow``: known tracker names (an unknown one is a one-line usage error)."""
    from distillers.tracking import parse_names

    try:
        return parse_names(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags every training task shares (the seed's defaults)."""
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
    ddp = parser.add_argument_group("several processes (torchrun --nproc_per_node=N -m distillers ...; "
                                    "docs/distributed.md)")
    ddp.add_argument("--lr-scaling", choices=["linear", "none"], default="linear",
                     help="linear: lr x number of processes, as the global batch grows with them (--batch-size is "
                          "per process); none: use --lr as given")
    ddp.add_argument("--sync-bn", action="store_true",
                     help="BatchNorm statistics over the global batch (SyncBatchNorm; needs GPUs)")
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
    group.add_argument("--input-size", type=positive_int, default=None,
                       help="image side the models see (--dataset imagefolder; default 32)")


def add_method_flags(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument("--init-epochs", "--init_epochs", dest="init_epochs", type=int, default=defaults.init_epochs,
                       help="initialisation-stage epochs of AB/FT/FSP")
    group.add_argument("--method-opt", dest="method_opt", type=key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="method-specific option, repeatable (e.g. beta=8 for dkd)")


def run_config(args: argparse.Namespace, task: str) -> RunConfig:
    """Turn parsed flags into the typed RunConfig saved with the run."""
    cfg = RunConfig(task=task)
    for key in ("dataset", "data_dir", "download", "workers", "augment", "data_path", "amp", "channels_last",
                "compile", "deterministic", "epochs",
                "batch_size", "lr", "lr_decay_epochs", "lr_decay_rate", "weight_decay", "momentum", "out", "name",
                "trial", "seed", "device", "resume", "overwrite", "save_freq", "max_steps_per_epoch", "lr_scaling",
                "sync_bn", "model", "student", "teacher", "method", "gamma", "alpha", "beta", "log", "log_project",
                "mlflow_uri"):
        if hasattr(args, key):
            setattr(cfg, key, getattr(args, key))
    for key in ("teacher_path", "student_path", "teacher_weights", "student_weights", "pretrained", "reset_head",
                "input_size", "teacher_weighting"):
        if hasattr(args, key):
            setattr(cfg, key, getattr(args, key))
    if isinstance(cfg.teacher_path, list):  # --teacher repeated: the first, then the others
        cfg.teacher_path, cfg.extra_teachers = cfg.teacher_path[0], tuple(cfg.teacher_path[1:])
    if hasattr(args, "kd_T"):
        cfg.method_options = MethodOptions(
            kd_T=args.kd_T, feat_dim=args.feat_dim, nce_k=args.nce_k, nce_t=args.nce_t, nce_m=args.nce_m,
            mode=args.mode, nce_t_s=args.nce_t_s, nce_t_t=args.nce_t_t, hint_layer=args.hint_layer,
            init_epochs=args.init_epochs, extra=dict(args.method_opt))
    return cfg


# ---- subcommands ------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """train-teacher, distill and transfer: the flags become a RunConfig, and the task registry runs it."""
    from distillers.tasks import run_task

    run_task(run_config(args, args.task))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distillers.tasks.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.ckpt, args.dataset, args.data_dir, args.model, args.batch_size, args.device,
                                 args.workers, args.download)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every process computed the same numbers
        return 0
    print(f"{result['arch']} on {args.dataset}: top-1 {result['test_acc']:.2f}%  top-5 {result['test_acc_top5']:.2f}%"
          f"  loss {result['test_loss']:.4f}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.options and args.what != "methods":
        raise UserError("--options lists method options: use `distillers list methods --options`")
    if args.what == "methods" and args.options:
        from distillers.methods import METHODS
        from distillers.methods.options import option_lines

        for name in METHODS.names():
            print(f"{name}: " + ("--method-opt KEY=VALUE" if METHODS.get(name).options else "no options"))
            for line in option_lines(METHODS.get(name).options):
                print(f"  {line}")
    elif args.what == "models":
        from distillers.models import MODELS, default_lr

        for name in MODELS.names():
            print(f"{name:12s} lr {default_lr(name)}")
    elif args.what == "methods":
        from distillers.methods import METHODS

        print(f"{'method':9s} {'seed name':12s} {'r':>5s} {'a':>5s} {'b':>7s}  paper")
        for name in METHODS.names():
            cls = METHODS.get(name)
            aliases = ",".join(METHODS.aliases_of(name)) or "-"
            w = cls.weights
            note = f"  [{cls.weights_note}]" if cls.weights_note else ""
            print(f"{name:9s} {aliases:12s} {w.gamma:5g} {w.alpha:5g} {w.beta:7g}  {cls.paper}{note}")
    else:
        from distillers.data import DATASETS

        for name in DATASETS.names():
            spec = DATASETS.get(name)
            count = getattr(spec, "num_classes", "?") or "per-folder"  # 0: one class per folder (imagefolder)
            print(f"{name:13s} {count} classes  {getattr(spec, 'description', '')}")
    return 0


def cmd_fetch_teachers(args: argparse.Namespace) -> int:
    from distillers.fetch import fetch_teachers

    def measure(name: str, path) -> None:
        """Print the teacher's test accuracy when CIFAR-100 is present (a bad teacher spoils every run)."""
        from distillers.tasks.evaluate import evaluate_checkpoint

        try:
            result = evaluate_checkpoint(str(path), "cifar100", args.data_dir, name, device=args.device)
        except UserError as error:
            print(f"{name}: saved to {path} (accuracy not measured: {error})")
            return
        print(f"{name}: saved to {path}; CIFAR-100 test top-1 {result['test_acc']:.2f}%")

    paths = fetch_teachers(args.names or None, save_dir=args.save_dir, url=args.url, file=args.file, verify=measure)
    print(f"fetched {len(paths)} teacher(s) into {args.save_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from distillers.reporting import write_report

    fmt = "markdown" if args.format == "md" else args.format
    text = write_report(args.runs, fmt, args.out, args.metric, args.published, args.plots, args.dataset)
    if args.out is None:
        print(text)
    else:
        print(f"wrote {args.out}")
    if args.plots:
        print(f"plots in {args.plots}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from distillers.tasks.quickstart import QuickstartPlan, quickstart

    plan = QuickstartPlan() if args.seeds is None else QuickstartPlan(seeds=tuple(range(args.seeds)))
    quickstart(args.out, plan)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from distillers.sweep import run_sweep

    extra = [flag for flag in args.extra if flag != "--"]
    return run_sweep(args, None if args.status else sweep_base_config(extra), extra)


def sweep_base_config(extra: Sequence[str]) -> RunConfig:
    """The flags after ``sweep --``, parsed once with distill's run and method flags: the config every run of the
    grid derives from (the sweep sets each run's teacher, student, method, weights, trial, dataset and out)."""
    parser = OneLineErrors(prog="distillers sweep ... --", allow_abbrev=False)
    add_run_flags(parser)
    add_method_flags(parser)
    return run_config(parser.parse_args(extra), "distill")


def cmd_analyze(args: argparse.Namespace) -> int:
    from distillers.tasks.analyze import analyze

    paths = analyze(args.teacher, args.student, args.out, args.dataset, args.data_dir, args.teacher_arch,
                    args.student_arch, args.tsne_points, args.device, args.download)
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0


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


def cmd_export(args: argparse.Namespace) -> int:
    from distillers.export import export_safetensors

    path = export_safetensors(args.ckpt, args.out, args.overwrite)
    print(f"wrote {path}")
    return 0


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags end in one line naming the problem and where help is, exit code 2 (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"distillers: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = OneLineErrors(
        prog="distillers", formatter_class=formatter,
        description="Knowledge distillation for image classification: train teachers, distil students with 16+ "
                    "methods (KD, FitNet, AT, ..., CRD, ICD, RRD), transfer, and report the paper tables.",
        epilog="Run `distillers <command> --help` for the flags of each command.")
    sub = parser.add_subparsers(dest="command", metavar="command")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str, epilog: str = ""
            ) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                 formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=110))
        command.set_defaults(handler=handler)
        return command

    teacher = add("train-teacher", cmd_run, "train a model from scratch (a teacher, or a student baseline)",
                  EPILOG_TEACHER)
    teacher.set_defaults(task="teacher")
    teacher.add_argument("--model", required=True, help="architecture (see `distillers list models`)")
    add_run_flags(teacher)

    dist = add("distill", cmd_run, "distil a student from a trained teacher", EPILOG_DISTILL)
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

    evaluate = add("eval", cmd_eval, "evaluate a checkpoint: top-1/top-5 on the test split",
                   "example:\n  distillers eval --ckpt save/models/resnet32x4_vanilla/ckpt_epoch_240.pth")
    evaluate.add_argument("--ckpt", required=True, help="checkpoint file")
    evaluate.add_argument("--model", default=None, help="architecture (default: recorded or from the folder name)")
    evaluate.add_argument("--dataset", default="cifar100")
    evaluate.add_argument("--data-dir", default="./data")
    evaluate.add_argument("--download", action="store_true")
    evaluate.add_argument("--batch-size", type=positive_int, default=128)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--workers", type=non_negative_int, default=2)

    listing = add("list", cmd_list, "list registered models, methods or datasets")
    listing.add_argument("what", choices=["models", "methods", "datasets"])
    listing.add_argument("--options", action="store_true",
                         help="with `methods`: every method's --method-opt options (type, default, source, help)")

    probe = add("transfer", cmd_run, "linear-probe transfer of a distilled student to STL-10 or TinyImageNet",
                "example:\n  distillers transfer --student-ckpt runs/S-wrn_16_2_.../last.pt --dataset stl10 --download")
    probe.add_argument("--student-ckpt", "--path-s", "--path_s", dest="student_path", required=True,
                       help="distilled student checkpoint")
    probe.add_argument("--model", default=None, help="student architecture (default: recorded in the checkpoint)")
    add_run_flags(probe)
    probe.set_defaults(task="transfer", dataset="stl10", epochs=120, lr_decay_epochs=(30, 60, 90))

    export = add("export", cmd_export, "export a checkpoint's weights for sharing (safetensors)",
                 "example:\n  distillers export --ckpt runs/<run>/best.pt --format safetensors")
    export.add_argument("--ckpt", required=True, help="checkpoint file")
    export.add_argument("--format", choices=["safetensors"], default="safetensors")
    export.add_argument("--out", default=None, help="output file (default: next to the checkpoint)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    fetch = add("fetch-teachers", cmd_fetch_teachers,
                "download the seed's pretrained CIFAR-100 teachers into save/models/<name>_vanilla/",
                "examples:\n  distillers fetch-teachers                      (all six: wrn_40_2 resnet56 resnet110 "
                "resnet32x4 vgg13 ResNet50)\n  distillers fetch-teachers resnet32x4 --url https://my.mirror/{name}.pth"
                "\n  distillers fetch-teachers --file cifar_teachers.tar\n\nSources, in order: the seed's URLs, "
                "then mdistiller's cifar_teachers.tar release; --url/--file replace them.")
    fetch.add_argument("names", nargs="*", help="teacher names (default: all six)")
    fetch.add_argument("--save-dir", default="save/models", help="where to put <name>_vanilla/ckpt_epoch_240.pth")
    fetch.add_argument("--url", default=None, help="your mirror: a .pth, a URL template with {name}, or a .tar")
    fetch.add_argument("--file", default=None, help="a local .pth or .tar holding the teachers")
    fetch.add_argument("--data-dir", default="./data", help="CIFAR-100 location, to measure each teacher's accuracy")
    fetch.add_argument("--device", default="auto")

    report = add("report", cmd_report, "turn run directories into the seed's result tables (and plots)",
                 "examples:\n  distillers report runs/                       (every run below runs/)\n"
                 "  distillers report runs/ --published --metric best --format csv --out table.csv\n"
                 "  distillers report runs/ --plots figures/\n\nCells are mean ± std over trials (the count in "
                 "brackets) of the last epoch's top-1 (the seed's convention) unless --metric best.")
    report.add_argument("runs", nargs="+", help="run directories, or folders holding them")
    report.add_argument("--format", choices=["md", "markdown", "csv", "json"], default="md")
    report.add_argument("--out", default=None, help="write the table to this file instead of printing it")
    report.add_argument("--metric", choices=["last", "best"], default="last",
                        help="last-epoch (the seed's convention) or best-epoch accuracy")
    report.add_argument("--published", action="store_true",
                        help="add the seed README's published number and our difference beside each cell")
    report.add_argument("--plots", default=None, metavar="DIR", help="also write PNG plots into DIR")
    report.add_argument("--dataset", default=None,
                        help="which dataset's runs to tabulate (default: the one the runs share, else cifar100)")

    quick = add("quickstart", cmd_quickstart, "offline demo on scikit-learn's digits: teacher, student, +KD, +ICD",
                "example:\n  distillers quickstart --out runs/quickstart\n\nNo download and no GPU needed; takes a "
                "few minutes on 2 CPU cores.")
    quick.add_argument("--out", default="runs/quickstart", help="where the run directories go")
    quick.add_argument("--seeds", type=positive_int, default=None,
                       help="seeds per student row (default 2); more seeds, a tighter mean and a longer run")

    grid = add("sweep", cmd_sweep, "run (or print) the grid of runs behind the seed's tables, then report",
               "examples:\n  distillers sweep --dry-run                                  (the seed's 13 pairs x 18 rows"
               " x 3 trials)\n  distillers sweep --pairs resnet32x4:resnet8x4 --methods kd crd crd+kd --trials 3"
               "\n\nFinished runs are skipped, interrupted ones resumed; teachers are read from "
               "--teacher-dir/<name>_vanilla/ckpt_epoch_240.pth (distillers fetch-teachers). Flags after -- go to "
               "every run (e.g. -- --epochs 240 --data-dir data).\n\nOn a SLURM cluster or several GPUs "
               "(docs/cluster.md):\n  distillers sweep --launcher slurm --partition gpu --gpus-per-job 1 --cpus-per-job 4 --time 720 "
               "-- --data-dir data\n  distillers sweep --status runs\n  distillers sweep --launcher local --gpus 0,1,2,3")
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

    study = add("analyze", cmd_analyze, "the seed's analysis plots for a teacher/student pair: t-SNE and "
                "class-correlation difference", "example:\n  distillers analyze --teacher T.pth --student "
                "runs/<run>/last.pt --out figures/")
    study.add_argument("--teacher", required=True, help="teacher checkpoint")
    study.add_argument("--student", required=True, help="student checkpoint")
    study.add_argument("--teacher-arch", default=None)
    study.add_argument("--student-arch", default=None)
    study.add_argument("--dataset", default="cifar100")
    study.add_argument("--data-dir", default="./data")
    study.add_argument("--download", action="store_true")
    study.add_argument("--tsne-points", type=positive_int, default=2000, help="test images shown in the t-SNE")
    study.add_argument("--device", default="auto")
    study.add_argument("--out", default="figures", help="folder for the PNG files")

    bench = add("bench", cmd_bench, "speed: the seed's pipeline and ours side by side, same models and batch",
                "examples:\n  distillers bench                                    (the four default cases, 50 steps)"
                "\n  distillers bench --pairs resnet32x4:resnet8x4:crd --steps 100\n\nPrints images/second of "
                "each pipeline, their ratio and peak memory; synthetic CIFAR-shaped data.")
    bench.add_argument("--pairs", nargs="+", default=None, metavar="TEACHER:STUDENT[:METHOD]",
                       help="cases (default: resnet32x4:resnet8x4 kd and crd, wrn_40_2:wrn_16_2, ResNet50:MobileNetV2)")
    bench.add_argument("--methods", nargs="+", default=None, help="run every pair with each of these methods")
    bench.add_argument("--batch-size", type=positive_int, default=64)
    bench.add_argument("--steps", type=positive_int, default=50, help="timed steps per pipeline")
    bench.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    bench.add_argument("--device", default="auto")
    # "ours" takes distill's fast-path flags and runs what distill would choose with them (tasks.speed).
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        load_plugins()  # methods, models and datasets of the user's own modules (distillers.plugins)
        return args.handler(args)
    except UserError as error:
        # One write per line: under torchrun several processes share stderr, and their lines must not interleave.
        sys.stderr.write(f"distillers: error: {error}\n")
        sys.stderr.flush()
        return error.exit_code
    except KeyboardInterrupt:
        print("distillers: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
