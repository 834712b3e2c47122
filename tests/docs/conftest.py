"""Fixtures of the docs tests: the guides' example files loaded as plugins, and the CLI tests' tiny data.

The examples register into the package's global registries; ``examples_loaded`` removes them again afterwards, so
tests elsewhere that read the registries see only the package's own methods, models and datasets.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from distillers import plugins
from distillers.data import DATASETS
from distillers.methods import METHODS
from distillers.models import MODELS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = [EXAMPLES / "feature_mimic.py", EXAMPLES / "tiny_cnn.py", EXAMPLES / "npz_dataset.py"]


@pytest.fixture(scope="module")
def examples_loaded() -> Iterator[str]:
    """Load the example files through ``DISTILLERS_PLUGINS`` (as a user would); yield the variable's value."""
    registries = (METHODS, MODELS, DATASETS)
    saved = [(dict(r._items), dict(r._aliases)) for r in registries]
    value = ",".join(str(path) for path in EXAMPLE_FILES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(plugins.ENV, value)
        plugins.load_plugins()
        yield value
    for registry, (items, aliases) in zip(registries, saved):
        registry._items, registry._aliases = items, aliases
    for path in EXAMPLE_FILES:
        module = plugins._loaded_files.pop(path.resolve(), None)
        if module is not None:
            sys.modules.pop(module.__name__, None)
