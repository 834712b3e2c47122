"""Commands about results and the registries: report, quickstart, list."""

from __future__ import annotations

import argparse

from distillers.cli.arguments import Commands, positive_int
from distillers.errors import UserError

EPILOG_REPORT = """examples:
  distillers report runs/                       (every run below runs/)
  distillers report runs/ --published --metric best --format csv --out table.csv
  distillers report runs/ --plots figures/

Cells are mean ± std over trials (the count in brackets) of the last epoch's top-1 (the seed's convention) unless
--metric best."""

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


def register(commands: Commands) -> None:
    for add_command in (_report, _quickstart, _list):
        add_command(commands)


def _report(commands: Commands) -> None:
    report = commands.add("report", cmd_report, "turn run directories into the seed's result tables (and plots)",
                          EPILOG_REPORT)
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


def _quickstart(commands: Commands) -> None:
    quick = commands.add("quickstart", cmd_quickstart,
                         "offline demo on scikit-learn's digits: teacher, student, +KD, +ICD",
                         "example:\n  distillers quickstart --out runs/quickstart\n\nNo download and no GPU needed; "
                         "takes a few minutes on 2 CPU cores.")
    quick.add_argument("--out", default="runs/quickstart", help="where the run directories go")
    quick.add_argument("--seeds", type=positive_int, default=None,
                       help="seeds per student row (default 2); more seeds, a tighter mean and a longer run")


def _list(commands: Commands) -> None:
    listing = commands.add("list", cmd_list, "list registered models, methods or datasets")
    listing.add_argument("what", choices=["models", "methods", "datasets"])
    listing.add_argument("--options", action="store_true",
                         help="with `methods`: every method's --method-opt options (type, default, source, help)")
