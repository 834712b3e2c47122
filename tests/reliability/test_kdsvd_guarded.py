"""KDSVD's SVD gradient: the reference one breaks on tied singular values, the guarded option stays finite.

Tied singular values come from dead (all-zero) channels of a ReLU map: several zero singular values. The gradient
of singular vectors has terms in 1 / (s_j^2 - s_i^2) for every pair, so torch's SVD backward (RepDistiller's too)
returns NaN there although the loss only uses the leading vectors.
"""

from __future__ import annotations

import pytest
import torch

from distillers.errors import UserError
from distillers.methods.kdsvd import KDSVD, _GuardedSVD, kdsvd_loss

from . import harness


def stage_maps(dead: int, seed: int) -> list[torch.Tensor]:
    """resnet8-shaped stage outputs (16x32x32, 32x16x16, 64x8x8) of a batch of 2, with ``dead`` zero channels."""
    generator = torch.Generator().manual_seed(seed)
    maps = []
    for channels, side in ((16, 32), (32, 16), (64, 8)):
        x = torch.randn(2, channels, side, side, generator=generator).relu()
        x[:, :dead] = 0
        maps.append(x.requires_grad_())
    return maps


def student_grads(guarded: bool, dead: int) -> list[torch.Tensor]:
    g_s, g_t = stage_maps(dead, seed=0), [m.detach() for m in stage_maps(0, seed=1)]
    sum(kdsvd_loss(g_s, g_t, guarded=guarded)).backward()
    return [m.grad for m in g_s]


def test_tied_singular_values_break_the_reference_gradient_but_not_the_guarded_one():
    reference = student_grads(guarded=False, dead=4)
    guarded = student_grads(guarded=True, dead=4)
    assert not all(torch.isfinite(g).all() for g in reference)  # the divergence: NaN reaches the weights
    assert all(torch.isfinite(g).all() for g in guarded)
    assert max(float(g.abs().max()) for g in guarded) < 1e3


def test_guarded_and_reference_agree_without_ties():
    reference, guarded = student_grads(guarded=False, dead=0), student_grads(guarded=True, dead=0)
    for ours, theirs in zip(guarded, reference):
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("shape", [(3, 10, 4), (2, 4, 7), (2, 6, 6)])  # tall (HW > C), wide, square
def test_guarded_backward_is_torchs_when_singular_values_are_apart(shape):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
    rank = min(shape[1:])
    w_s = torch.randn(shape[0], rank, dtype=torch.float64, generator=generator)
    w_v = torch.randn(shape[0], shape[2], rank, dtype=torch.float64, generator=generator)

    def loss(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        v = v * torch.sign(v[..., :1, :])  # a sign-invariant use of the vectors (their sign is arbitrary)
        return (s * w_s).sum() + (v * w_v).sum()

    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    expected, = torch.autograd.grad(loss(s, vh.mT), x)
    actual, = torch.autograd.grad(loss(*_GuardedSVD.apply(x)), x)
    assert torch.allclose(actual, expected, atol=1e-10)


def test_svd_option_is_typed():
    assert KDSVD.resolve_options({})["svd"] == "reference"
    assert KDSVD.resolve_options({"svd": "guarded"})["svd"] == "guarded"
    with pytest.raises(UserError, match="svd=fast"):
        KDSVD.resolve_options({"svd": "fast"})


def test_guarded_kdsvd_trains_through_the_cli(assets, tmp_path):
    import json

    outcome = harness.run(["distill", "--teacher", str(assets.teacher), "--student", "resnet8", "--method", "kdsvd",
                           "-a", "0", "-b", "1", "--method-opt", "svd=guarded", "--epochs", "1", "--name", "run",
                           "--out", "runs", *assets.flags()], tmp_path)
    assert outcome.code == 0, outcome.describe()
    config = json.loads((tmp_path / "runs" / "run" / "config.json").read_text())
    assert config["method_options"]["extra"]["svd"] == "guarded"
    assert harness.summary(tmp_path / "runs" / "run")["status"] == "finished"
