"""The side-by-side benchmark on CPU with tiny settings, and the fast training step against the seed's step."""

from __future__ import annotations

import pytest
import torch

from distillers import bench
from distillers.bench import (
    Case,
    build_objective,
    fast_step,
    format_table,
    make_optimizer,
    parse_case,
    resolve_cases,
    run_bench,
    seed_step,
    synthetic_cifar,
)
from distillers.config import MethodOptions
from distillers.data import ContrastSampler
from distillers.data.gpu_loader import GpuLoader
from distillers.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from distillers.engine import speed
from distillers.errors import UserError
from distillers.objective import Distillation

TINY = dict(batch_size=8, steps=2, warmup=1, device="cpu", num_images=64, nce_k=16)



def test_run_bench_on_cpu_returns_rows_with_throughput_ratio_and_memory():
    lines: list[str] = []
    rows = run_bench(["resnet8:resnet8"], ["kd", "crd"], data_path="auto", compile=False, workers=1, log=lines.append,
                     **TINY)
    assert [(r["teacher"], r["student"], r["method"]) for r in rows] == [("resnet8", "resnet8", "kd"),
                                                                         ("resnet8", "resnet8", "crd")]
    for row in rows:
        assert row["seed_images_per_s"] > 0 and row["ours_images_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["ours_images_per_s"] / row["seed_images_per_s"])
        assert row["seed_peak_mb"] > 0 and row["ours_peak_mb"] > 0
        assert row["seed_loader_images_per_s"] > 0 and row["ours_loader_images_per_s"] > 0
        # "ours" is what distill chooses on CPU with the same flags (engine.speed), and the row says what that was
        assert row["data_path"] == speed.CPU_AUTO["data_path"]
        assert row["amp"] == ("bf16" if speed.CPU_AUTO["amp"] else "off")
        assert row["channels_last"] is speed.CPU_AUTO["channels_last"]
        assert row["cudnn_benchmark"] is False and row["optimizer"] == "torch's default SGD"
        assert row["compile"] == "off" and row["workers"] == 1 and row["device"] == "cpu"
        assert torch.isfinite(torch.tensor([row["seed_loss"], row["ours_loss"]])).all()
    table = format_table(rows)
    assert "| resnet8 -> resnet8 | crd |" in table and f"{rows[0]['speedup']:.2f}x" in table
    assert table.startswith("machine: ") and "torch " + torch.__version__ in table
    assert f"ours = what distill chooses with these flags: data path {rows[0]['data_path']}" in table
    assert any("seed pipeline" in line for line in lines)


def test_compile_failure_is_reported_and_the_run_continues_eagerly(monkeypatch):
    """A compile call that fails at the first step (where torch.compile really compiles) falls back to eager."""
    def lazy_failure(function, **kwargs):
        def compiled(*args, **kwargs):
            raise RuntimeError("no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", lazy_failure)
    rows = run_bench([("resnet8", "resnet8", "kd")], None, data_path="cpu", amp="on", channels_last="on",
                     compile=True, workers=0, **TINY)
    assert rows[0]["compile"] == "fell back to eager: RuntimeError: no working C++ compiler"
    assert rows[0]["ours_images_per_s"] > 0 and rows[0]["data_path"] == "cpu"
    assert rows[0]["amp"] == "bf16" and rows[0]["channels_last"] is True  # forced choices run on CPU too


def crd_batch() -> dict[str, torch.Tensor]:
    images, labels = synthetic_cifar(64, seed=1)
    loader = GpuLoader(images, labels, 8, device="cpu", mean=CIFAR100_MEAN, std=CIFAR100_STD, channels_last=True,
                       contrast=ContrastSampler(labels, 16))
    return next(iter(loader))


def one_step(fast: bool, batch: dict[str, torch.Tensor], dtype: torch.dtype, channels_last: bool
             ) -> tuple[float, Distillation]:
    """One training step of a fresh resnet8 -> resnet8 CRD objective (CRD: index, contrast rows, memory bank)."""
    objective = build_objective(Case("resnet8", "resnet8", "crd"), 64, MethodOptions(nce_k=16), 8, seed=3)
    objective = objective.to(dtype).train()
    batch = {**batch, "image": batch["image"].to(dtype)}
    if channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    else:
        batch["image"] = batch["image"].contiguous()
    optimizer = make_optimizer(objective, 0.05, fused=fast)
    assert bool(optimizer.defaults["fused"]) == fast
    if fast:
        loss = fast_step(objective, optimizer, batch)
        assert isinstance(loss, torch.Tensor)
        return loss.item(), objective
    loss = seed_step(objective, optimizer, batch)
    assert isinstance(loss, float)
    return loss, objective


def assert_same_step(fast: tuple[float, Distillation], reference: tuple[float, Distillation], rtol: float,
                     atol: float) -> None:
    """Same loss, same gradients, same updated parameters and buffers (BN statistics, the CRD memory bank)."""
    assert fast[0] == pytest.approx(reference[0], rel=rtol)
    fast_params = dict(fast[1].named_parameters())
    for name, parameter in reference[1].named_parameters():
        assert (parameter.grad is None) == (fast_params[name].grad is None), name
        if parameter.grad is not None:
            torch.testing.assert_close(fast_params[name].grad, parameter.grad, rtol=rtol, atol=atol, msg=name)
        torch.testing.assert_close(fast_params[name], parameter, rtol=rtol, atol=atol, msg=name)
    fast_buffers = dict(fast[1].named_buffers())
    for name, buffer in reference[1].named_buffers():
        torch.testing.assert_close(fast_buffers[name], buffer, rtol=rtol, atol=atol, msg=name)


def test_fast_step_matches_the_reference_step_in_float32():
    """Fused SGD + loss kept on the device against plain SGD + item(), both float32 NCHW: the same step."""
    batch = crd_batch()
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    assert_same_step(one_step(True, batch, torch.float32, False), one_step(False, batch, torch.float32, False),
                     rtol=1e-6, atol=1e-7)


def test_channels_last_fast_step_matches_the_reference_step():
    """The whole fast step (channels_last too) against the reference, in float64.

    In float32 the two layouts agree in the loss (1e-6) but not tightly in the gradients: their convolutions round
    differently (~1e-6), which flips a few ReLU masks where the pre-activation is within that of zero, and each
    flipped element moves a gradient by a whole term. float64 removes the rounding, so any real difference shows.
    """
    batch = crd_batch()
    fast = one_step(True, batch, torch.float64, True)
    assert fast[1].student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_step(fast, one_step(False, batch, torch.float64, False), rtol=1e-9, atol=1e-12)
    loss32 = one_step(True, batch, torch.float32, True)[0]
    assert loss32 == pytest.approx(one_step(False, batch, torch.float32, False)[0], rel=1e-5)


def test_cases_parse_and_unknown_names_are_user_errors():
    assert parse_case("resnet32x4:resnet8x4") == Case("resnet32x4", "resnet8x4", "kd")
    assert parse_case("wrn_40_2->wrn_16_2:crd") == Case("wrn_40_2", "wrn_16_2", "crd")
    assert resolve_cases(None, None) == list(bench.DEFAULT_CASES)
    assert resolve_cases(None, ["crd"]) == [Case("resnet32x4", "resnet8x4", "crd"), Case("wrn_40_2", "wrn_16_2", "crd"),
                                            Case("ResNet50", "MobileNetV2", "crd")]
    with pytest.raises(UserError, match="TEACHER:STUDENT"):
        parse_case("resnet32x4")
    with pytest.raises(UserError, match="unknown model 'resnet9'"):
        resolve_cases(["resnet9:resnet8"], None)
    with pytest.raises(UserError, match="unknown method 'kdd'"):
        resolve_cases(["resnet8:resnet8:kdd"], None)


@pytest.mark.parametrize("override, message", [({"data_path": "disk"}, "--data-path 'disk'"),
                                               ({"steps": 0}, "--steps must be an integer >= 1"),
                                               ({"num_images": 4}, "--num-images 4 is smaller")])
def test_bad_settings_are_user_errors(override, message):
    with pytest.raises(UserError, match=message):
        run_bench(["resnet8:resnet8"], None, **{**TINY, **override})
