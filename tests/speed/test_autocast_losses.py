"""RKD's and PKT's relation matrices are computed in float32 under bf16 autocast (issue 13, defect 1)."""

from __future__ import annotations

import pytest
import torch

from distillers.methods import METHODS
from distillers.methods.base import Step


def pooled_features(seed: int, batch: int = 64, dim: int = 256) -> torch.Tensor:
    """Post-ReLU pooled embeddings: positive, similar to each other (where bf16 Gram matrices lose most)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(1.0 + 0.3 * torch.randn(batch, dim, generator=generator))


@pytest.mark.parametrize("name", ["rkd", "pkt"])
def test_loss_under_cpu_autocast_matches_float32(name):
    method = METHODS.get(name)()
    f_s, f_t = pooled_features(0), pooled_features(1)
    step = Step(feats_s=[f_s], feats_t=[f_t], logits_s=torch.zeros(64, 10), logits_t=torch.zeros(64, 10),
                target=torch.zeros(64, dtype=torch.long))

    def total() -> torch.Tensor:
        out = method(step)
        return sum(out.values()) if isinstance(out, dict) else out

    reference = total()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = total()
    assert mixed.dtype is torch.float32
    assert torch.allclose(mixed, reference, rtol=1e-5, atol=0), (float(mixed), float(reference))
