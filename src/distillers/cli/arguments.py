"""Argument types and the parser class of the command line: a bad value is one line naming it, exit code 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from distillers.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _number(text: str, kind: type, word: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number")
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


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags end in one line naming the problem and where help is, exit code 2 (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"distillers: error: {message} (see `{self.prog} --help`)\n")


class Commands:
    """Adds subcommands to the top-level parser, each with its handler and a help text that teaches."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.sub = parser.add_subparsers(dest="command", metavar="command")

    def add(self, name: str, handler: Handler, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        command = self.sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                      formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog,
                                                                                                        width=110))
        command.set_defaults(handler=handler)
        return command
