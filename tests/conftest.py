"""Shared test helpers: where the reference fixtures live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference"


def reference_file(env_var: str, filename: str) -> Path:
    """The fixture file named by ``env_var`` (a file path) or, unset, ``../shared/reference/<filename>``."""
    return Path(os.environ.get(env_var) or DEFAULT_REFERENCE_DIR / filename)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests run tiny models: one intra-op thread is several times faster than OpenMP workers contending for the 2
    cores of a CI machine (and keeps timings stable). Restored at the end of the session."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def models_reference() -> dict:
    import json

    path = reference_file("DISTILLERS_MODELS_REFERENCE", "models.json")
    with open(path) as handle:
        return json.load(handle)
