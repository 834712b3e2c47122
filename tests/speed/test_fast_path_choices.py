"""The fast path's choices on CPU, with the CUDA answers simulated (issue 13: defects 5, 6, 7 and the extras)."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import torch

from distillers.config import RunConfig
from distillers.data import ArrayImages
from distillers.engine import distributed, speed
from distillers.errors import UserError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_gpu(monkeypatch: pytest.MonkeyPatch, native_bf16: bool, count: int = 1) -> None:
    """A visible GPU whose bf16 is native or only emulated (V100/T4: supported only when emulation counts)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native_bf16 or including_emulation)


def test_emulated_bf16_does_not_count(monkeypatch):
    fake_gpu(monkeypatch, native_bf16=False)
    assert not speed.supports_bf16(CUDA)
    assert speed.amp_dtype(RunConfig(amp="auto"), CUDA) is None
    with pytest.raises(UserError, match="native bfloat16"):
        speed.amp_dtype(RunConfig(amp="on"), CUDA)
    fake_gpu(monkeypatch, native_bf16=True)
    assert speed.amp_dtype(RunConfig(amp="auto"), CUDA) is torch.bfloat16


def test_amp_on_runs_bf16_autocast_on_cpu():
    enter = speed.autocast_factory(RunConfig(amp="on"), CPU)
    weight = torch.randn(4, 4)
    with enter():
        assert (weight @ weight).dtype is torch.bfloat16
    assert speed.amp_dtype(RunConfig(amp="auto"), CPU) is (torch.bfloat16 if speed.CPU_AUTO["amp"] else None)
    with speed.autocast_factory(RunConfig(amp="off"), CPU)():
        assert (weight @ weight).dtype is torch.float32


def test_channels_last_choices():
    assert speed.use_channels_last(RunConfig(channels_last="on"), CPU)
    assert not speed.use_channels_last(RunConfig(channels_last="off"), CUDA)
    assert speed.use_channels_last(RunConfig(channels_last="auto"), CUDA)
    assert speed.use_channels_last(RunConfig(channels_last="auto"), CPU) is speed.CPU_AUTO["channels_last"]
    assert RunConfig.from_dict({"channels_last": True}).channels_last == "auto"  # configs written before
    assert RunConfig.from_dict({"channels_last": False}).channels_last == "off"
    model = torch.nn.Conv2d(3, 4, 3)
    speed.prepare([model], RunConfig(channels_last="on"), CPU)
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


def array_set(n: int = 20) -> ArrayImages:
    return ArrayImages(np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 4)


def test_data_path_device_on_cpu_and_the_gpu_alias():
    data = array_set()
    for name in ("device", "gpu"):
        assert speed.use_device_data(RunConfig(data_path=name), data, CPU)
    assert not speed.use_device_data(RunConfig(data_path="cpu"), data, CPU)
    assert speed.use_device_data(RunConfig(data_path="auto"), data, CPU) is (speed.CPU_AUTO["data_path"] == "device")
    with pytest.raises(UserError, match="--data-path device is not possible: .*strong"):
        speed.use_device_data(RunConfig(data_path="device", augment="strong"), data, CPU)
    with pytest.raises(UserError, match="unknown --data-path 'disk'"):
        speed.use_device_data(RunConfig(data_path="disk"), data, CPU)


def test_auto_data_path_is_one_answer_for_all_ranks(monkeypatch):
    """Rank 0 has room, another rank does not: every rank must take the DataLoader path (all_max of the misses)."""
    fake_gpu(monkeypatch, native_bf16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the agreement tensor then lives on the CPU
    monkeypatch.setattr("distillers.data.gpu_loader.fits_on_device", lambda dataset, device: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    seen = []

    def other_rank_misses(tensor):
        seen.append(float(tensor))
        return torch.ones(())

    monkeypatch.setattr(distributed, "all_max", other_rank_misses)
    assert not speed.use_device_data(RunConfig(data_path="auto"), array_set(), CUDA)
    assert seen == [0.0]  # this rank reported that it fits
    monkeypatch.setattr(distributed, "all_max", lambda tensor: torch.zeros(()))
    assert speed.use_device_data(RunConfig(data_path="auto"), array_set(), CUDA)


def test_backends_deterministic_and_restored(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with speed.backends(RunConfig(deterministic=True), CUDA) as facts:
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        assert facts == {"cudnn_benchmark": False, "deterministic": True, "cublas_workspace_config": ":4096:8"}
    assert (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()) == before
    with speed.backends(RunConfig(), CUDA) as facts:  # training autotunes on CUDA unless --deterministic
        assert torch.backends.cudnn.benchmark and facts["cudnn_benchmark"]
    with speed.backends(RunConfig(), CPU) as facts:
        assert not facts["cudnn_benchmark"]


def test_cuda_index_beyond_the_visible_gpus_is_one_line(monkeypatch):
    from distillers.engine.device import resolve_device

    fake_gpu(monkeypatch, native_bf16=True, count=1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UserError, match="cuda:7.*1 visible GPU"):
        resolve_device("cuda:7")


def test_process_group_gets_a_long_timeout(monkeypatch):
    """Rank 0 downloads inside ``in_turn`` while the others wait: torch's 10-minute default would kill them."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "rendezvous", lambda url: iter([(torch.distributed.HashStore(), 1, 2)]))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed, "_owned", False)
    distributed.setup("cpu")
    assert calls[0]["timeout"] == datetime.timedelta(seconds=distributed.DEFAULT_TIMEOUT_S)
    assert distributed.DEFAULT_TIMEOUT_S >= 3600
    monkeypatch.setenv("DISTILLERS_DIST_TIMEOUT", "90")
    assert distributed.timeout() == datetime.timedelta(seconds=90)
    monkeypatch.setenv("DISTILLERS_DIST_TIMEOUT", "soon")
    with pytest.raises(UserError, match="DISTILLERS_DIST_TIMEOUT"):
        distributed.timeout()
    monkeypatch.setattr(distributed, "_owned", False)  # nothing was really joined
