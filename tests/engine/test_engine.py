"""Engine building blocks: lr schedule, accuracy counting, the resumable sampler, checkpoint safety."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from distillers.engine.checkpoint import architecture_of, load_checkpoint, load_weights, save_checkpoint
from distillers.engine.metrics import count_correct
from distillers.engine.optim import StepSchedule
from distillers.engine.rng import rng_state, set_rng_state
from distillers.engine.sampler import EpochSampler
from distillers.errors import UserError


def test_step_schedule_matches_seed_rule():
    schedule = StepSchedule(0.05, (150, 180, 210), 0.1)
    assert schedule.lr(1) == 0.05
    assert schedule.lr(150) == 0.05  # the decay applies after the milestone epoch, as RepDistiller's
    assert schedule.lr(151) == pytest.approx(0.005)
    assert schedule.lr(181) == pytest.approx(0.0005)
    assert schedule.lr(240) == pytest.approx(0.00005)


def test_count_correct_top1_top5():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 9, 0, 0, 0]])
    target = torch.tensor([5, 5, 0])
    top1, top5 = count_correct(logits, target)
    assert int(top1) == 1  # only the first row's arg-max is its label
    assert int(top5) == 2  # row 2's label 5 has the lowest logit: outside its top 5


def test_sampler_depends_only_on_seed_and_epoch_and_skips():
    a, b = EpochSampler(20, seed=3), EpochSampler(20, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    first = list(a)
    assert first == list(b) and sorted(first) == list(range(20))
    b.set_epoch(5)
    assert list(b) != first
    a.set_epoch(4, skip=7)
    assert list(a) == first[7:] and len(a) == 13


def test_sampler_shards_cover_everything_once_per_rank_set():
    shards = []
    for rank in range(3):
        sampler = EpochSampler(10, seed=1, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert all(len(s) == 4 for s in shards)  # padded to a multiple of the world size
    assert set().union(*shards) == set(range(10))


def test_rng_state_round_trip():
    state = rng_state()
    expected = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    set_rng_state(state)
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    payload = {"model": {"w": torch.ones(2)}, "arch": "resnet8", "epoch": 3, "rng": rng_state()}
    save_checkpoint(payload, path)
    loaded = load_checkpoint(path)
    assert loaded["arch"] == "resnet8" and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Evil()}, handle)
    torch.save({"model": {"x": _Evil()}}, tmp_path / "evil2.pth")
    for candidate in (path, tmp_path / "evil2.pth"):
        with pytest.raises(UserError, match="refusing to load|not a readable"):
            load_checkpoint(candidate)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_missing_checkpoints_are_user_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "text.pt")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1)}, "epoch": 1}, path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint({"model": {"w": torch.zeros(1)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_architecture_from_repdistiller_folder_name(tmp_path):
    names = ["resnet8", "resnet8x4", "resnet32x4", "wrn_40_2"]
    folder = tmp_path / "resnet32x4_vanilla"
    folder.mkdir()
    assert architecture_of(folder / "ckpt_epoch_240.pth", {}, names) == "resnet32x4"
    assert architecture_of(tmp_path / "resnet8x4_cifar100_lr_0.05" / "x.pth", {}, names) == "resnet8x4"
    assert architecture_of(folder / "x.pth", {"arch": "wrn_40_2"}, names) == "wrn_40_2"
    assert architecture_of(tmp_path / "mystery" / "x.pth", {}, names) is None


def test_load_weights_names_differing_keys():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    with pytest.raises(UserError, match=r"missing: 0.bias.*wrong shape: 0.weight"):
        load_weights(model, {"0.weight": torch.zeros(4, 2)}, "t.pth", "tiny")
