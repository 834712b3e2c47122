"""Shared test helpers: where the reference fixtures live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli.conftest import FAST, N_TEST, N_TRAIN, Teacher, only_child
from data.fake_data import FakeArrays, write_cifar100
from distillers import cli

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


# The end-to-end tests' tiny CIFAR-100 and teacher, built once per session for every folder that uses them.
@pytest.fixture(scope="session")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> FakeArrays:
    """A tiny CIFAR-100 in the official pickle format (pass ``cifar.root`` as --data-dir)."""
    return write_cifar100(tmp_path_factory.mktemp("data"), n_train=N_TRAIN, n_test=N_TEST, seed=0)


@pytest.fixture(scope="session")
def teacher(tmp_path_factory: pytest.TempPathFactory, cifar: FakeArrays) -> Teacher:
    """A resnet14 teacher trained for two steps through the CLI (stages as wide as resnet8's: every method applies)."""
    from distillers.tasks.evaluate import evaluate_checkpoint

    out = tmp_path_factory.mktemp("teacher-runs")
    code = cli.main(["train-teacher", "--model", "resnet14", "--epochs", "1", "--max-steps-per-epoch", "2",
                     "--batch-size", "16", "--data-dir", str(cifar.root), "--out", str(out), *FAST])
    assert code == 0
    checkpoint = only_child(out) / "last.pt"
    accuracy = evaluate_checkpoint(str(checkpoint), "cifar100", str(cifar.root), device="cpu", workers=0)["test_acc"]
    return Teacher(checkpoint, "resnet14", accuracy)
