"""The ``distillers`` command line: subcommands -> RunConfig -> task.

Each module here adds a group of subcommands (``register``); a new command is one function in one of them.
Every error a user can cause ends in one line on stderr and exit code 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from distillers.cli import checkpoints, grid, results, speed, training
from distillers.cli.arguments import Commands, OneLineErrors
from distillers.cli.run_flags import run_config
from distillers.errors import UserError
from distillers.plugins import load_plugins

COMMAND_GROUPS = (training, checkpoints, results, grid, speed)  # the order `distillers --help` lists them in


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="distillers", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Knowledge distillation for image classification: train teachers, distil students with 16+ "
                    "methods (KD, FitNet, AT, ..., CRD, ICD, RRD), transfer, and report the paper tables.",
        epilog="Run `distillers <command> --help` for the flags of each command.")
    commands = Commands(parser)
    for group in COMMAND_GROUPS:
        group.register(commands)
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


__all__ = ["build_parser", "main", "run_config"]
