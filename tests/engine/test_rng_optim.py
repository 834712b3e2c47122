"""RNG state and optimiser restore across devices: what a GPU-written checkpoint needs to resume anywhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillers.engine.device import resolve_device
from distillers.engine.optim import load_optimizer, sgd
from distillers.engine.rng import rng_state, set_rng_state
from distillers.errors import UserError


def test_cpu_rng_state_never_touches_cuda(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CPU run must not initialise CUDA")

    monkeypatch.setattr(torch.cuda, "get_rng_state", forbidden)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    assert "cuda" not in rng_state(torch.device("cpu"))


@pytest.mark.parametrize("saved_gpus, device_index, expected", [(8, 0, 0), (8, 3, 3), (1, 0, 0), (2, 5, 0)])
def test_cuda_state_of_many_gpus_restores_on_fewer(monkeypatch, saved_gpus, device_index, expected):
    """Checkpoints written before kept one state per visible GPU: the training device's own is restored (its
    index when the list has it), never all of them (an 8-GPU job resumed on one GPU raised IndexError)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: restored.append(int(state[0])))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("restores every GPU"))
    state = rng_state(torch.device("cpu"))
    state["cuda"] = [torch.full((4,), index, dtype=torch.uint8) for index in range(saved_gpus)]
    set_rng_state(state, torch.device("cuda", device_index))
    assert restored == [expected]


def test_cuda_state_is_ignored_on_cpu(monkeypatch):
    """A GPU checkpoint's CUDA stream is skipped on CPU; the CPU streams are restored from it all the same."""
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *a, **k: pytest.fail("CPU resume set a CUDA state"))
    torch.manual_seed(5)
    saved = {**rng_state(), "cuda": torch.zeros(4, dtype=torch.uint8)}
    expected = torch.rand(3)
    torch.rand(7)
    set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


def test_gpu_optimizer_state_loads_with_this_process_kernels_and_layouts():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))
    optimizer = sgd(model.parameters(), 0.1, 0.9, 5e-4, torch.device("cpu"))
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        group["fused"] = True  # as a CUDA run writes it
    for state in saved["state"].values():
        if state["momentum_buffer"].ndim == 4:
            state["momentum_buffer"] = state["momentum_buffer"].contiguous(memory_format=torch.channels_last)
    fresh = sgd(model.parameters(), 0.1, 0.9, 5e-4, torch.device("cpu"))
    load_optimizer(fresh, saved, "last.pt")
    assert all(not group.get("fused") for group in fresh.param_groups)
    for param in model.parameters():
        buffer = fresh.state[param]["momentum_buffer"]
        assert buffer.stride() == param.stride()
        assert torch.equal(buffer, optimizer.state[param]["momentum_buffer"])


def test_optimizer_state_of_another_run_is_one_line():
    """No optimiser state, or one of other parameters (a two-layer model's for a one-layer run): one clear line."""
    cpu = torch.device("cpu")
    run = sgd(nn.Linear(2, 2).parameters(), 0.1, 0.9, 0.0, cpu)
    with pytest.raises(UserError, match="runs/x/last.pt holds no optimiser state for this run"):
        load_optimizer(run, None, "runs/x/last.pt")
    other = sgd(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).parameters(), 0.1, 0.9, 0.0, cpu)
    with pytest.raises(UserError, match="holds no optimiser state for this run"):
        load_optimizer(run, other.state_dict(), "runs/x/last.pt")


def test_a_gpu_index_beyond_the_visible_ones_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"--device cuda:7: this machine has 1 visible GPU\(s\)"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
