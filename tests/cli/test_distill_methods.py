"""``distillers distill`` end to end for every registered method: resnet14 -> resnet8 on a tiny CIFAR-100, one short
epoch (two-stage methods: one short initialisation epoch too). Each run directory must be complete, its metrics
finite and named after the method's loss terms, and its checkpoint must hold the method's state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distillers.config import MethodOptions
from distillers.methods import METHODS, Method, Pair
from distillers.models import create_model

from .conftest import FAST, N_TRAIN, Teacher, only_child, read_run, run_cli

NCE_K, FEAT_DIM, BATCH, STEPS = 16, 16, 16, 2
# Loss terms a method logs besides ce/kl when they are not just its own name (``loss_<name>``).
MULTI_TERM = {"dist": {"inter", "intra"}, "dkd": {"tckd", "nckd"}, "dkd_ls": {"tckd", "nckd"},
              "rkd": {"rkd_distance", "rkd_angle"}, "mlkd": {"ce_strong", "kd", "cc", "bc"},
              "mlkd_ls": {"ce_strong", "kd", "cc", "bc"}}


def needs_strong_view(name: str) -> bool:
    return bool(getattr(METHODS.get(name), "needs_strong_view", False))


def distill_argv(teacher: Teacher, cifar_root: Path, out: Path, method: str, *extra: str) -> list:
    return ["distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method", method,
            "--epochs", "1", "--max-steps-per-epoch", str(STEPS), "--batch-size", str(BATCH), "--init-epochs", "1",
            "--nce-k", str(NCE_K), "--feat-dim", str(FEAT_DIM), "--data-dir", cifar_root, "--out", out, *FAST, *extra]


def expected_terms(name: str) -> set[str]:
    """``loss_*`` keys of the main stage: ce and kl when their default weight is non-zero, then the method's own."""
    weights = METHODS.get(name).weights
    terms = {"ce"} if weights.gamma else set()
    terms |= {"kl"} if weights.alpha else set()
    if weights.beta:
        terms |= MULTI_TERM.get(name, {name})
    return {f"loss_{term}" for term in terms}


def fresh_method(name: str) -> Method:
    """The method as the task builds it for this pair and these options (for comparing checkpointed state)."""
    options = MethodOptions(feat_dim=FEAT_DIM, nce_k=NCE_K, init_epochs=1)
    pair = Pair(student=create_model("resnet8"), teacher=create_model("resnet14"), student_name="resnet8",
                teacher_name="resnet14", num_classes=100, num_data=N_TRAIN, options=options)
    return METHODS.get(name).build(pair)


@pytest.mark.parametrize("name", METHODS.names())
def test_distill_end_to_end(capsys, tmp_path, cifar, teacher, name):
    strong = needs_strong_view(name)
    result = run_cli(capsys, *distill_argv(teacher, cifar.root, tmp_path, name,
                                           *(["--augment", "strong"] if strong else [])))
    assert result.code == 0, result.err
    run_dir = only_child(tmp_path)
    method_cls = METHODS.get(name)
    w = method_cls.weights
    assert run_dir.name.startswith(f"S-resnet8_T-resnet14_cifar100_{name}_r-{w.gamma:g}_a-{w.alpha:g}_b-{w.beta:g}")
    assert "finished" in result.out and str(run_dir) in result.out

    # A complete run directory.
    for file in ("config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run_dir / file).is_file(), f"{file} missing from {sorted(p.name for p in run_dir.iterdir())}"
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    config, metrics, summary = read_run(run_dir)
    assert config["method"] == name and config["student"] == "resnet8" and config["teacher"] == "resnet14"
    assert config["weights"] == {"gamma": w.gamma, "alpha": w.alpha, "beta": w.beta}
    assert config["method_options"]["nce_k"] == NCE_K and config["method_options"]["feat_dim"] == FEAT_DIM
    assert config["protocol"] == method_cls.protocol

    # Metrics: finite numbers, the init stage first for two-stage methods, the method's terms by name.
    stages = [record["stage"] for record in metrics]
    assert stages == (["init", "main"] if method_cls.init_stage else ["main"])
    for record in metrics:
        for key, value in record.items():
            if isinstance(value, float):
                assert math.isfinite(value), (record["stage"], key, value)
    main = metrics[-1]
    assert {key for key in main if key.startswith("loss_")} == expected_terms(name)
    assert sum(main[key] for key in expected_terms(name)) == pytest.approx(main["train_loss"], rel=1e-6, abs=1e-9)
    if method_cls.init_stage:
        assert {key for key in metrics[0] if key.startswith("loss_")} == {"loss_init"}

    # Summary: finished, with the teacher's accuracy as evaluated independently.
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    assert summary["teacher_acc"] == teacher.test_acc
    assert summary["last_acc"] == main["test_acc"]

    # The checkpoint: the student (RepDistiller keys) and the method's complete state.
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["arch"] == "resnet8" and checkpoint["method"] == name
    create_model("resnet8").load_state_dict(checkpoint["model"], strict=True)
    state = checkpoint["method_state"]
    fresh = fresh_method(name)
    initial = {key: value.clone() for key, value in fresh.state_dict().items()}
    fresh.load_state_dict(state, strict=True)  # every buffer and parameter of the method, nothing else
    check_method_state(name, state, initial)


def check_method_state(name: str, state: dict, initial: dict) -> None:
    """The stateful methods' state is the trained one, not a freshly initialised copy."""
    if name == "crd":
        assert state["contrast.memory_v1"].shape == state["contrast.memory_v2"].shape == (N_TRAIN, FEAT_DIM)
        params = state["contrast.params"]  # [K, T, Z_v1, Z_v2, momentum]: Z is fixed by the first batch
        assert params[0] == NCE_K and params[2] > 0 and params[3] > 0
    elif name == "rrd":
        queue = state["queue"]  # STEPS * BATCH >= NCE_K teacher embeddings enqueued: every row is a unit vector
        assert queue.shape == (NCE_K, FEAT_DIM)
        assert torch.allclose(queue.norm(dim=1), torch.ones(NCE_K), atol=1e-5)
        assert int(state["queue_ptr"]) == (STEPS * BATCH) % NCE_K
    elif name == "icd":
        assert state["params.tau"].shape == ()
        assert not torch.equal(state["params.tau"], initial["params.tau"])  # learned by the main optimiser


def test_distill_from_a_repdistiller_teacher(capsys, tmp_path, cifar, teacher):
    """``save/models/<arch>_vanilla/ckpt_epoch_240.pth`` holding only ``{"model": state_dict}`` is a valid teacher."""
    legacy = tmp_path / "save" / "models" / "resnet14_vanilla" / "ckpt_epoch_240.pth"
    legacy.parent.mkdir(parents=True)
    torch.save({"model": torch.load(teacher.checkpoint, weights_only=True)["model"]}, legacy)
    out = tmp_path / "runs"
    result = run_cli(capsys, *distill_argv(Teacher(legacy, "resnet14", teacher.test_acc), cifar.root, out, "kd"))
    assert result.code == 0, result.err
    config, _, summary = read_run(only_child(out))
    assert config["teacher"] == "resnet14" and config["teacher_path"] == str(legacy)
    assert summary["teacher_acc"] == teacher.test_acc  # the same weights, read from the other layout


@pytest.mark.parametrize("name", [n for n in METHODS.names() if needs_strong_view(n)])
def test_two_view_method_without_strong_augment_is_refused(capsys, tmp_path, cifar, teacher, name):
    result = run_cli(capsys, *distill_argv(teacher, cifar.root, tmp_path, name))
    assert result.code == 2
    assert "--augment strong" in result.err and "\n" not in result.err.strip()
    assert not any(tmp_path.iterdir())  # refused before the run directory exists


def test_stateful_methods_are_checked():
    """The method-state checks above name registered methods (a rename must not silently skip them)."""
    assert {"crd", "rrd", "icd"} <= set(METHODS.names())
    assert set(MULTI_TERM) <= set(METHODS.names())
