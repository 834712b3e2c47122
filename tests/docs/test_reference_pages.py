"""docs/gen_reference.py writes a page per registered method (typed options, defaults, refused pairs), and the
model and dataset tables, from the registries: plugins included, so the example method gets its page too."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
import types
from pathlib import Path

import pytest

from distillers.methods import METHODS

GENERATOR = Path(__file__).resolve().parents[2] / "docs" / "gen_reference.py"


@pytest.fixture(scope="module")
def pages(examples_loaded: str) -> dict[str, str]:
    """Run the generator as mkdocs-gen-files does (``runpy.run_path``), capturing the pages it writes."""
    written: dict[str, str] = {}

    @contextlib.contextmanager
    def open_page(path: str, mode: str = "w"):
        buffer = io.StringIO()
        yield buffer
        written[path] = buffer.getvalue()

    fake = types.ModuleType("mkdocs_gen_files")
    fake.open = open_page
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "mkdocs_gen_files", fake)
        runpy.run_path(str(GENERATOR))
    return written


def test_every_method_has_a_page_with_its_options_and_defaults(pages: dict[str, str]) -> None:
    index = pages["reference/methods.md"]
    for name in METHODS.names():
        cls = METHODS.get(name)
        page = pages[f"reference/methods/{name}.md"]
        assert f"(methods/{name}.md)" in index and cls.paper in page
        w = cls.weights
        assert f"`-r {w.gamma:g} -a {w.alpha:g} -b {w.beta:g}`" in page
        for option in cls.options:
            assert f"| `{option.name}` | {option.type.__name__} | `{option.shown_default()}` |" in page, (name, option)
    mimic = pages["reference/methods/feature_mimic.md"]
    assert mimic.startswith("# FeatureMimic (`feature_mimic`)") and "| `normalize` | bool | `False` |" in mimic


def test_pages_say_which_seed_pairs_a_method_refuses_and_its_published_numbers(pages: dict[str, str]) -> None:
    fsp = pages["reference/methods/fsp.md"]
    refused = fsp.split("## Seed pairs it refuses")[1]
    assert "| wrn_40_2 → wrn_40_1 | method 'fsp' does not support wrn_40_2 -> wrn_40_1: FSP needs equal" in refused
    assert "wrn_40_2 → wrn_16_2" not in refused  # equal widths: served
    assert "None: it builds for all 13 pairs" in pages["reference/methods/kd.md"]
    crd = pages["reference/methods/crd.md"].split("## Published CIFAR-100 top-1")[1]
    assert "| teacher → student | CRD | CRD+KD |" in crd and "| resnet32x4 → resnet8x4 | 75.51 | 75.46 |" in crd


def test_model_and_dataset_tables_come_from_the_registries(pages: dict[str, str]) -> None:
    models = pages["reference/models.md"]
    assert "| `tiny_cnn` | — | distillers_plugin_tiny_cnn | 0.03 | 16/1 16/1 32/2 64/4 64/emb | 0.05 |" in models
    assert "| `resnet8x4` | — | resnet | 1.23 | 32/1 64/1 128/2 256/4 256/emb | 0.05 |" in models
    datasets = pages["reference/datasets.md"]
    assert "| `npz_example` | npz example | 10 | 32 | `npz_example/images.npz` | no |" in datasets
    assert "| `cifar100` | CIFAR-100 | 100 | 32 |" in datasets
