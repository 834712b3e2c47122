"""Fixtures of the method tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def float64():
    """The reference runs in float64; restore the previous default so other tests are unaffected."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
