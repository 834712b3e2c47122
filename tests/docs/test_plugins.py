"""distillers.plugins: a user's module registers its names before a command runs; what cannot load is one line."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from cli.conftest import run_cli
from distillers import plugins
from distillers.errors import UserError
from distillers.methods import METHODS

PLUGIN = '''
from distillers.methods import METHODS, Method, Weights


@METHODS.register("{name}")
class Plugged(Method):
    name = "{name}"
    weights = Weights(gamma=1.0)
'''


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A module ``lab_methods`` on sys.path that registers the method ``plugged_kd``; unregistered afterwards."""
    (tmp_path / "lab_methods.py").write_text(PLUGIN.format(name="plugged_kd"))
    monkeypatch.syspath_prepend(str(tmp_path))
    items, aliases = dict(METHODS._items), dict(METHODS._aliases)
    yield "lab_methods"
    METHODS._items, METHODS._aliases = items, aliases
    sys.modules.pop("lab_methods", None)


def test_module_named_in_the_environment_is_listed_by_the_cli(plugin_module: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv(plugins.ENV, f" {plugin_module} ,")
    result = run_cli(capsys, "list", "methods")
    assert result.code == 0 and "plugged_kd" in METHODS
    assert any(line.split()[:1] == ["plugged_kd"] for line in result.out.splitlines())
    assert plugins.load_plugins() and "plugged_kd" in METHODS  # loading again registers nothing twice


def test_entry_points_are_loaded(plugin_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = importlib.metadata.EntryPoint(name="lab", value=plugin_module, group=plugins.GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [entry] if group == plugins.GROUP else [])
    assert plugins.plugin_names("") == [plugin_module]
    plugins.load_plugins("")
    assert "plugged_kd" in METHODS


def test_a_file_is_loaded_once(tmp_path: Path) -> None:
    path = tmp_path / "one_file_method.py"
    path.write_text(PLUGIN.format(name="file_kd"))
    items, aliases = dict(METHODS._items), dict(METHODS._aliases)
    try:
        first = plugins.load_plugins(str(path))
        assert plugins.load_plugins(str(path)) == first and "file_kd" in METHODS
    finally:
        METHODS._items, METHODS._aliases = items, aliases
        module = plugins._loaded_files.pop(path.resolve())
        sys.modules.pop(module.__name__, None)


@pytest.mark.parametrize("value, fragment", [
    ("no_such_lab.methods", "cannot import plugin module 'no_such_lab.methods'"),
    ("missing/plugin.py", "plugin file missing/plugin.py (from DISTILLERS_PLUGINS) does not exist"),
])
def test_what_cannot_load_is_one_line_and_exit_2(value: str, fragment: str, capsys, monkeypatch) -> None:
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        plugins.load_plugins(value)
    monkeypatch.setenv(plugins.ENV, value)
    result = run_cli(capsys, "list", "methods")
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and fragment in result.err


def test_a_broken_plugin_keeps_its_own_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import inside the plugin that fails is the plugin's bug, not a missing plugin: its error propagates."""
    (tmp_path / "broken_lab.py").write_text("import no_such_dependency_of_the_lab\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_the_lab"):
        plugins.load_plugins("broken_lab")
