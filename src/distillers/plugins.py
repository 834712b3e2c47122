"""Methods, models and datasets defined outside the package: import the user's modules before a command runs.

A module registers what it defines when it is imported (``@METHODS.register("my_method")``), so importing it is
all a plugin needs. The CLI calls ``load_plugins`` before every command (torchrun workers run the same command);
any other entry point that runs a RunConfig must call it too. Two sources name the modules:

- ``DISTILLERS_PLUGINS``: comma-separated module names (``mylab.my_method``) or paths of ``.py`` files;
- the entry-point group ``distillers.plugins`` of installed packages, e.g. in the plugin's ``pyproject.toml``:
  ``[project.entry-points."distillers.plugins"] my_method = "mylab.my_method"``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from distillers.errors import UserError

ENV = "DISTILLERS_PLUGINS"
GROUP = "distillers.plugins"

_loaded_files: dict[Path, ModuleType] = {}  # a file loaded twice would register its names twice


def plugin_names(env: str | None = None) -> list[str]:
    """The modules and files to load: entry points of installed packages first, then ``DISTILLERS_PLUGINS``."""
    names = [entry.value for entry in importlib.metadata.entry_points(group=GROUP)]
    text = os.environ.get(ENV, "") if env is None else env
    names += [part.strip() for part in text.split(",") if part.strip()]
    return names


def load_plugin(name: str) -> ModuleType:
    """Import one plugin, a dotted module name or a ``.py`` path; loading it again is a no-op."""
    if name.endswith(".py") or os.sep in name or "/" in name:
        return _load_file(Path(name))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not name.startswith(error.name):
            raise  # the plugin itself imports something missing: its own traceback says what
        raise UserError(f"cannot import plugin module {name!r} (from {ENV} or the {GROUP!r} entry points): "
                        f"{error}; install it or add its folder to PYTHONPATH") from None


def _load_file(path: Path) -> ModuleType:
    resolved = path.expanduser().resolve()
    if resolved in _loaded_files:
        return _loaded_files[resolved]
    if not resolved.is_file():
        raise UserError(f"plugin file {path} (from {ENV}) does not exist")
    module_name = f"distillers_plugin_{resolved.stem}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise UserError(f"plugin {path} (from {ENV}) is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    _loaded_files[resolved] = module
    return module


def load_plugins(env: str | None = None) -> list[ModuleType]:
    """Import every plugin named by the entry points and ``DISTILLERS_PLUGINS`` (or ``env`` when given)."""
    return [load_plugin(name) for name in plugin_names(env)]
