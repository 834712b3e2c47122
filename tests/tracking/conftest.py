"""Fixtures of the tracker tests: the CLI tests' tiny CIFAR-100 and teacher, and a W&B without key or network."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """No W&B key anywhere (environment, ~/.netrc) and no W&B settings: the situation of a machine without an
    account or network, which must give an offline W&B run. HOME also keeps W&B's caches inside the test folder."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR",
                 "WANDB_DATA_DIR", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    return home
