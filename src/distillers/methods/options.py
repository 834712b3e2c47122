"""Typed method options: what ``--method-opt KEY=VALUE`` may set for a method, checked before any training.

Every method declares its options (``Method.options``): name, type, default, one-line help and where the default
comes from. ``resolve`` turns the raw values of a run (strings from the command line, numbers from a saved
``config.json`` or a sweep) into every declared option with its typed value, and refuses an unknown key, a value
of the wrong type or one outside the option's choices in one line. A resolved dict resolves to itself (resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from distillers.errors import UserError

TRUE_WORDS, FALSE_WORDS = ("true", "1"), ("false", "0")
TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a word"}


@dataclass(frozen=True)
class Option:
    """One method-specific option. ``default=None`` means "decided per pair or by a shared flag" (``source`` says
    by what: a per-pair table or ``--kd_T``); ``choices`` lists the allowed values, the default among them."""

    name: str
    type: type
    default: Any
    help: str
    source: str
    choices: tuple[Any, ...] | None = None

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type (strings are parsed); ValueError when it is not one."""
        if value is None and self.default is None:
            return None  # "per pair": the method decides when it is built
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError("not a choice")
            return value
        if isinstance(value, str):
            return _parse(self.type, value)
        if self.type is bool:
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
        elif self.type is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif self.type is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        raise ValueError(f"{value!r} is not {TYPE_WORDS.get(self.type, self.type.__name__)}")

    def shown_default(self) -> str:
        """The default as ``list methods --options`` prints it (``-`` for a per-pair or flag default)."""
        return "-" if self.default is None else str(self.default)


def option_lines(options: Iterable[Option]) -> list[str]:
    """One line per option for ``distillers list methods --options``: name, type, default, source, help."""
    lines = []
    for option in options:
        kind = "|".join(map(str, option.choices)) if option.choices else option.type.__name__
        lines.append(f"{option.name:16s} {kind:10s} default {option.shown_default():6s} {option.help}  "
                     f"[source: {option.source}]")
    return lines


def _parse(kind: type, text: str) -> Any:
    word = text.strip()
    if kind is bool:
        if word.lower() in TRUE_WORDS:
            return True
        if word.lower() in FALSE_WORDS:
            return False
        raise ValueError(word)
    if kind is str:
        return text
    return kind(word)  # int("2.5") and float("abc") raise ValueError


def _choice_words(option: Option) -> str:
    words = [f"{choice} (default)" if choice == option.default else str(choice) for choice in option.choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def resolve(method: str, options: Iterable[Option], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``method`` with its typed value: ``raw``'s where given, else the default.

    An unknown key, a wrong-typed value or a value outside the choices is a one-line UserError naming the method.
    """
    declared = {option.name: option for option in options}
    for key in raw:
        if key not in declared:
            valid = f"valid: {', '.join(declared)}" if declared else "it takes none"
            raise UserError(f"method {method!r} has no option {key!r}; {valid}")
    resolved = {}
    for name, option in declared.items():
        if name not in raw:
            resolved[name] = option.default
            continue
        value = raw[name]
        try:
            resolved[name] = option.convert(value)
        except ValueError:
            if option.choices is not None:
                raise UserError(f"method {method!r}: unknown --method-opt {name}={value}; choose "
                                f"{_choice_words(option)}") from None
            raise UserError(f"method {method!r}: --method-opt {name}={value} is not "
                            f"{TYPE_WORDS.get(option.type, option.type.__name__)} ({name}: {option.help})") from None
    return resolved
