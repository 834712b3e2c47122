"""What both reference-parity tests share: float64 as the default dtype, and the fixtures' tolerance."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

NEGLIGIBLE = 1e-10  # below this a fixture tensor is compared with the absolute tolerance only


def assert_matches(actual: Tensor | None, expected: Tensor | None, what: str) -> None:
    """The fixture's tolerance; integer tensors must be equal, ``None`` stands for all zeros."""
    if expected is None:
        assert actual is None or not actual.any(), f"{what}: expected no gradient, got a non-zero one"
        return
    if actual is None:
        actual = torch.zeros_like(expected)
    if not expected.is_floating_point():
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), f"{what}: {actual} != {expected}"
        return
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * max(1.0, scale), msg=lambda m: f"{what}: {m}")
    # That tolerance is absolute below 1, where it cannot see a 2% error in PKT's ~6e-5 loss: also hold a
    # tensor to its own scale, unless it is numerically zero (a bias that BatchNorm cancels gets ~1e-17).
    if scale > NEGLIGIBLE:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * scale, msg=lambda m: f"{what}: {m}")


def assert_grads(inputs: dict, expected: dict, params: dict[str, Tensor], rename: Callable[[str], str]) -> None:
    """Every recorded gradient: of a student input (a tensor or a feature list) or of a parameter (fixture name)."""
    for name, want in expected.items():
        if name in inputs:
            got = inputs[name]
            if isinstance(want, (list, tuple)):
                assert len(got) == len(want), f"grad of {name}: {len(got)} tensors, expected {len(want)}"
                for i, (g, w) in enumerate(zip(got, want)):
                    assert_matches(g.grad, w, f"grad of {name}[{i}]")
            else:
                assert_matches(got.grad, want, f"grad of {name}")
        else:
            assert rename(name) in params, f"gradient recorded for {name!r}, which is neither an input nor a parameter"
            assert_matches(params[rename(name)].grad, want, f"grad of {name}")
