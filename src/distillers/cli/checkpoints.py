"""Commands about checkpoints and trained models: eval, export, fetch-teachers, analyze."""

from __future__ import annotations

import argparse
import os

from distillers.cli.arguments import Commands, non_negative_int, positive_int
from distillers.errors import UserError

EPILOG_FETCH = """examples:
  distillers fetch-teachers                      (all six: wrn_40_2 resnet56 resnet110 resnet32x4 vgg13 ResNet50)
  distillers fetch-teachers resnet32x4 --url https://my.mirror/{name}.pth
  distillers fetch-teachers --file cifar_teachers.tar

Sources, in order: the seed's URLs, then mdistiller's cifar_teachers.tar release; --url/--file replace them."""

def cmd_eval(args: argparse.Namespace) -> int:
    from distillers.tasks.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.ckpt, args.dataset, args.data_dir, args.model, args.batch_size, args.device,
                                 args.workers, args.download)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every process computed the same numbers
        return 0
    print(f"{result['arch']} on {args.dataset}: top-1 {result['test_acc']:.2f}%  top-5 {result['test_acc_top5']:.2f}%"
          f"  loss {result['test_loss']:.4f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distillers.export import export_safetensors

    path = export_safetensors(args.ckpt, args.out, args.overwrite)
    print(f"wrote {path}")
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from distillers.tasks.analyze import analyze

    paths = analyze(args.teacher, args.student, args.out, args.dataset, args.data_dir, args.teacher_arch,
                    args.student_arch, args.tsne_points, args.device, args.download)
    print("wrote " + ", ".join(str(path) for path in paths))
    return 0


def register(commands: Commands) -> None:
    for add_command in (_eval, _export, _fetch_teachers, _analyze):
        add_command(commands)


def _eval(commands: Commands) -> None:
    evaluate = commands.add("eval", cmd_eval, "evaluate a checkpoint: top-1/top-5 on the test split",
                            "example:\n  distillers eval --ckpt save/models/resnet32x4_vanilla/ckpt_epoch_240.pth")
    evaluate.add_argument("--ckpt", required=True, help="checkpoint file")
    evaluate.add_argument("--model", default=None, help="architecture (default: recorded or from the folder name)")
    evaluate.add_argument("--dataset", default="cifar100")
    evaluate.add_argument("--data-dir", default="./data")
    evaluate.add_argument("--download", action="store_true")
    evaluate.add_argument("--batch-size", type=positive_int, default=128)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--workers", type=non_negative_int, default=2)


def _export(commands: Commands) -> None:
    export = commands.add("export", cmd_export, "export a checkpoint's weights for sharing (safetensors)",
                          "example:\n  distillers export --ckpt runs/<run>/best.pt --format safetensors")
    export.add_argument("--ckpt", required=True, help="checkpoint file")
    export.add_argument("--format", choices=["safetensors"], default="safetensors")
    export.add_argument("--out", default=None, help="output file (default: next to the checkpoint)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _fetch_teachers(commands: Commands) -> None:
    fetch = commands.add("fetch-teachers", cmd_fetch_teachers,
                         "download the seed's pretrained CIFAR-100 teachers into save/models/<name>_vanilla/",
                         EPILOG_FETCH)
    fetch.add_argument("names", nargs="*", help="teacher names (default: all six)")
    fetch.add_argument("--save-dir", default="save/models", help="where to put <name>_vanilla/ckpt_epoch_240.pth")
    fetch.add_argument("--url", default=None, help="your mirror: a .pth, a URL template with {name}, or a .tar")
    fetch.add_argument("--file", default=None, help="a local .pth or .tar holding the teachers")
    fetch.add_argument("--data-dir", default="./data", help="CIFAR-100 location, to measure each teacher's accuracy")
    fetch.add_argument("--device", default="auto")


def _analyze(commands: Commands) -> None:
    study = commands.add("analyze", cmd_analyze,
                         "the seed's analysis plots for a teacher/student pair: t-SNE and class-correlation difference",
                         "example:\n  distillers analyze --teacher T.pth --student runs/<run>/last.pt --out figures/")
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
