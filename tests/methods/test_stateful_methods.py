"""State, configuration checks and two-stage wiring of AB, FT, FSP, CRD and RRD (values are checked by parity)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Step
from distillers.methods.ab import AB
from distillers.methods.crd import CRD
from distillers.methods.fsp import FSP
from distillers.methods.ft import FT
from distillers.methods.rrd import RRD
from distillers.models import create_model


def make_pair(student: str, teacher: str, num_data: int = 50000, num_classes: int = 100, **options) -> Pair:
    return Pair(student=create_model(student, num_classes), teacher=create_model(teacher, num_classes),
                student_name=student, teacher_name=teacher, num_classes=num_classes, num_data=num_data,
                options=MethodOptions(**options))


def vector_step(batch: int, s_dim: int, t_dim: int, **extra) -> Step:
    """A Step with only pooled embeddings, enough for the embedding-based methods."""
    return Step(feats_s=[torch.randn(batch, s_dim)], feats_t=[torch.randn(batch, t_dim)],
                logits_s=torch.randn(batch, 10), logits_t=torch.randn(batch, 10), target=torch.zeros(batch).long(),
                **extra)


def state_bytes(module: nn.Module) -> dict:
    """A state_dict after a save/load through bytes, as a checkpoint would carry it."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------- CRD


def crd_batch(n_data: int, nce_k: int, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.randperm(n_data, generator=generator)[:batch]
    negatives = torch.randint(0, n_data, (batch, nce_k), generator=generator)
    return index, torch.cat([index[:, None], negatives], dim=1)


def test_crd_memory_and_z_survive_a_state_dict_round_trip():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    n_data, nce_k, s_dim, t_dim = 20, 6, 5, 7
    crd = CRD(s_dim, t_dim, feat_dim=4, n_data=n_data, nce_k=nce_k)
    assert crd.contrast.params[2:4].tolist() == [-1.0, -1.0]  # Z unset until the first batch

    index, contrast = crd_batch(n_data, nce_k, 4, gen)
    untouched = torch.ones(n_data, dtype=torch.bool)
    untouched[index] = False
    memory_before = crd.contrast.memory_v1.clone()
    crd(vector_step(4, s_dim, t_dim, index=index, contrast_index=contrast))
    z = crd.contrast.params[2:4].clone()
    assert (z > 0).all()
    # Only the batch's rows move, and they are unit vectors afterwards.
    assert torch.equal(crd.contrast.memory_v1[untouched], memory_before[untouched])
    assert not torch.allclose(crd.contrast.memory_v1[index], memory_before[index])
    torch.testing.assert_close(crd.contrast.memory_v1[index].norm(dim=1), torch.ones(4))

    restored = CRD(s_dim, t_dim, feat_dim=4, n_data=n_data, nce_k=nce_k)  # different random memory and heads
    assert not torch.equal(restored.contrast.memory_v2, crd.contrast.memory_v2)
    restored.load_state_dict(state_bytes(crd))
    for name in ("params", "memory_v1", "memory_v2"):
        assert torch.equal(getattr(restored.contrast, name), getattr(crd.contrast, name))

    # The next step gives the same loss on both, and Z stays frozen (estimated once).
    index, contrast = crd_batch(n_data, nce_k, 4, gen)
    step = vector_step(4, s_dim, t_dim, index=index, contrast_index=contrast)
    torch.testing.assert_close(restored(step), crd(step))
    assert torch.equal(crd.contrast.params[2:4], z)
    assert torch.equal(restored.contrast.params[2:4], z)


def test_crd_rejects_more_negatives_than_the_dataset_has():
    pair = make_pair("resnet8", "resnet20", num_data=200, num_classes=100, nce_k=199, feat_dim=8)
    with pytest.raises(UserError, match="--nce_k 199"):
        METHODS.get("crd").build(pair)
    pair.options.nce_k = 198  # 2 samples per class: 198 negatives exist
    crd = METHODS.get("crd").build(pair)
    assert crd.contrast.memory_v1.shape == (200, 8)
    assert crd.embed_t.linear.in_features == 64
    assert set(crd.main_parameters()) == set(crd.embed_s.parameters()) | set(crd.embed_t.parameters())


def test_crd_checks_the_contrast_index_width():
    crd = CRD(5, 7, feat_dim=4, n_data=20, nce_k=6)
    index = torch.arange(3)
    with pytest.raises(ValueError, match="nce_k"):
        crd(vector_step(3, 5, 7, index=index, contrast_index=torch.zeros(3, 5, dtype=torch.long)))
    with pytest.raises(ValueError, match="contrast_index"):
        crd(vector_step(3, 5, 7))


# ---------------------------------------------------------------- RRD


def test_rrd_pointer_wraps_and_queue_holds_teacher_embeddings():
    torch.manual_seed(0)
    rrd = RRD(5, 7, feat_dim=4, nce_k=8)
    # Init quirk: unit columns, not rows.
    torch.testing.assert_close(rrd.queue.norm(dim=0), torch.ones(4))
    pointers = []
    for _ in range(3):
        step = vector_step(4, 5, 7)
        rrd(step).backward()
        pointers.append(int(rrd.queue_ptr))
    assert pointers == [4, 0, 4]
    # The last batch went to rows 0..3, L2-normalised teacher embeddings.
    expected = torch.nn.functional.normalize(rrd.embed_t(step.feats_t[-1]))
    torch.testing.assert_close(rrd.queue[:4], expected.detach())
    assert rrd.embed_t.weight.grad is None and rrd.embed_s.weight.grad is not None

    restored = RRD(5, 7, feat_dim=4, nce_k=8)
    restored.load_state_dict(state_bytes(rrd))
    assert torch.equal(restored.queue, rrd.queue) and int(restored.queue_ptr) == 4


def test_rrd_short_batch_wraps_around_the_ring():
    rrd = RRD(5, 7, feat_dim=4, nce_k=8)
    rrd.queue_ptr.fill_(6)
    before = rrd.queue.clone()
    step = vector_step(3, 5, 7)
    rrd(step)
    written = torch.nn.functional.normalize(rrd.embed_t(step.feats_t[-1])).detach()
    torch.testing.assert_close(rrd.queue[[6, 7, 0]], written)
    assert torch.equal(rrd.queue[1:6], before[1:6])
    assert int(rrd.queue_ptr) == 1


def test_rrd_check_batch_size():
    rrd = RRD.build(make_pair("resnet8", "resnet20", nce_k=64))
    rrd.check_batch_size(16)
    with pytest.raises(UserError, match=r"--nce_k \(64\).*batch size \(48\)"):
        rrd.check_batch_size(48)


# ---------------------------------------------------------------- FSP


def test_fsp_rejects_unequal_channel_lists_before_training():
    with pytest.raises(UserError, match=r"'fsp' does not support wrn_16_2 -> wrn_16_1: .*\[16, 16, 32, 64\]"):
        METHODS.get("fsp").build(make_pair("wrn_16_1", "wrn_16_2"))
    assert isinstance(METHODS.get("fsp").build(make_pair("resnet8", "resnet20")), FSP)


def test_fsp_init_trains_the_student_feature_modules():
    torch.manual_seed(0)
    pair = make_pair("resnet8", "resnet20")
    fsp = METHODS.get("fsp").build(pair)
    (modules,) = fsp.init_modules(pair.student)
    assert modules is not None and set(modules.parameters()) <= set(pair.student.parameters())
    x = torch.randn(2, 3, 32, 32)
    feats_s, logits_s = pair.student(x, is_feat=True)
    with torch.no_grad():
        feats_t, logits_t = pair.teacher(x, is_feat=True)
    step = Step(feats_s=feats_s, feats_t=feats_t, logits_s=logits_s, logits_t=logits_t, target=torch.zeros(2).long())
    loss = fsp.init_loss(step)
    loss.backward()
    assert loss.item() > 0
    assert pair.student.conv1.weight.grad is not None and pair.student.conv1.weight.grad.abs().sum() > 0
    assert fsp(step).item() == 0 and list(fsp.main_parameters()) == []


# ---------------------------------------------------------------- FT


@pytest.mark.parametrize(("student", "expected"), [
    ("resnet8", 0.01), ("resnet32x4", 0.01), ("wrn_16_1", 0.01), ("wrn_40_2", 0.01),
    ("ResNet50", 0.05), ("vgg8", 0.05), ("MobileNetV2", 0.02), ("ShuffleV1", 0.02),
])
def test_ft_init_lr_is_001_for_resnet_and_wrn_students(student, expected):
    default = 0.02 if student in ("MobileNetV2", "ShuffleV1") else 0.05
    assert FT.init_lr(student, default) == expected


def test_ft_end_init_stage_freezes_the_paraphraser():
    pair = make_pair("resnet8", "wrn_16_2")
    ft = METHODS.get("factor").build(pair)
    assert ft.paraphraser.encoder[0].in_channels == 128 and ft.translator.encoder[0].in_channels == 64
    assert ft.init_modules(pair.student) == [ft.paraphraser]
    feat_t = torch.rand(2, 128, 8, 8)
    ft.init_loss(Step([None, None, None, feat_t, None], [None, None, None, feat_t, None], None, None, None)).backward()
    assert ft.paraphraser.encoder[0].weight.grad is not None

    ft.end_init_stage()
    ft.train()  # what the engine does at every epoch
    assert not ft.paraphraser.training and ft.translator.training
    assert not any(p.requires_grad for p in ft.paraphraser.parameters())
    assert set(ft.main_parameters()) == set(ft.translator.parameters())
    feat_s = torch.rand(2, 64, 8, 8, requires_grad=True)
    ft(Step([feat_s, feat_s], [feat_t, feat_t], None, None, None)).backward()
    assert feat_s.grad.abs().sum() > 0 and ft.translator.encoder[0].weight.grad is not None


# ---------------------------------------------------------------- AB


def test_ab_init_stage_then_frozen_connector():
    torch.manual_seed(0)
    pair = make_pair("resnet8", "wrn_16_2")  # 16 -> 32 channels at stage 1: a real 1x1 connector
    ab = METHODS.get("abound").build(pair)
    assert AB.preact and AB.init_stage
    connector, feat_modules = ab.init_modules(pair.student)
    assert connector is ab.connector
    assert set(feat_modules.parameters()) <= set(pair.student.parameters())
    assert all(not isinstance(c, nn.Identity) for c in ab.connector.connectors)

    x = torch.randn(2, 3, 32, 32)
    feats_s, logits_s = pair.student(x, is_feat=True, preact=True)
    with torch.no_grad():
        feats_t, logits_t = pair.teacher(x, is_feat=True, preact=True)
    step = Step(feats_s=feats_s, feats_t=feats_t, logits_s=logits_s, logits_t=logits_t, target=torch.zeros(2).long())
    loss = ab.init_loss(step)
    loss.backward()
    assert loss.item() > 0
    assert ab.connector.connectors[0].conv.weight.grad is not None
    assert pair.student.layer1[0].conv1.weight.grad.abs().sum() > 0

    ab.end_init_stage()
    ab.train()
    assert not ab.connector.training and not any(p.requires_grad for p in ab.connector.parameters())
    assert list(ab.main_parameters()) == []
    assert ab(step).item() == 0.0


def test_ab_identity_connectors_for_equal_shapes():
    ab = METHODS.get("ab").build(make_pair("resnet8", "resnet20"))
    assert len(ab.connector.connectors) == 3
    assert all(isinstance(c, nn.Identity) for c in ab.connector.connectors)
    assert list(ab.state_dict()) == []


# ---------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("name", ["crd", "icd", "rrd"])
def test_embedding_losses_stay_float32_under_autocast(name):
    """exp(s / 0.07) overflows float16 and bfloat16 rounding is amplified by 1/T: these losses opt out of autocast."""
    torch.manual_seed(0)
    pair = make_pair("resnet8", "resnet20", num_data=40, num_classes=4, feat_dim=8, nce_k=8)
    method = METHODS.get(name).build(pair)
    index = torch.arange(4)
    contrast = torch.cat([index[:, None], torch.randint(4, 40, (4, 8))], dim=1)
    step = Step(feats_s=[torch.randn(4, 64).bfloat16()], feats_t=[torch.randn(4, 64).bfloat16()],
                logits_s=torch.randn(4, 4), logits_t=torch.randn(4, 4), target=index, index=index,
                contrast_index=contrast)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method(step)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    head = getattr(method.embed_s, "linear", method.embed_s)
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    assert all(b.dtype in (torch.float32, torch.int64) for b in method.buffers())
