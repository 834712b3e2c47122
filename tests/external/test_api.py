"""``distillers.Distiller``: equal to timm's own distillation tasks on the same models and batch (float64), usable in
a plain PyTorch loop, with stateful methods (CRD's memory bank)."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.task import FeatureDistillationTask, LogitDistillationTask

import distillers
from distillers.api import PooledFeatureMSE
from distillers.errors import UserError


def models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    teacher = timm.create_model("resnet18", num_classes=5).double().eval()
    student = timm.create_model("mobilenetv3_small_050", num_classes=5).double()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    return teacher, student, images, torch.tensor([0, 1, 2, 4])


def test_kd_equals_timm_logit_distillation() -> None:
    teacher, student, images, labels = models()
    theirs = LogitDistillationTask(student, teacher, temperature=4.0, dtype=torch.float64, verbose=False).train()
    expected = theirs(images, labels)["kd_loss"]
    ours = distillers.Distiller(teacher, student, "kd", gamma=0, alpha=1, beta=0, kd_T=4).train()
    loss, terms = ours(images, labels)
    assert set(terms) == {"kl"}
    assert abs(loss.item() - expected.item()) < 1e-6 and expected.item() > 0
    # timm's task loss (cross-entropy) is our gamma term
    _, with_ce = distillers.Distiller(teacher, student, "kd", gamma=1, alpha=1, beta=0, kd_T=4).train()(images, labels)
    assert abs(with_ce["ce"].item() - theirs(images, labels)["task_loss"].item()) < 1e-6


def test_pooled_feature_variant_equals_timm_feature_distillation() -> None:
    teacher, student, images, labels = models(1)
    theirs = FeatureDistillationTask(student, teacher, dtype=torch.float64, verbose=False).train()
    ours = distillers.Distiller(teacher, student, PooledFeatureMSE, gamma=0, alpha=0, beta=1).double().train()
    with torch.no_grad():  # the same projection (1024 -> 512; timm creates it because the sizes differ)
        ours.method.projection.weight.copy_(theirs.trainable_module.projection.weight)
        ours.method.projection.bias.copy_(theirs.trainable_module.projection.bias)
    expected = theirs(images, labels)["kd_loss"]
    loss, terms = ours(images, labels)
    assert set(terms) == {"pooled_mse"} and abs(loss.item() - expected.item()) < 1e-6 and expected.item() > 0


def test_training_loop_with_crd_memory() -> None:
    teacher, student, images, labels = models(2)
    teacher, student, images = teacher.float(), student.float(), images.float()
    with pytest.raises(UserError, match="num_data="):
        distillers.Distiller(teacher, student, "crd")
    distiller = distillers.Distiller(teacher, student, "crd", num_data=8, nce_k=4, feat_dim=8).train()
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.1)
    assert len(list(distiller.trainable_parameters())) > len(list(student.parameters()))
    index = torch.tensor([0, 1, 2, 3])
    contrast = torch.cat([index[:, None], torch.tensor([[4, 5, 6, 7]] * 4)], dim=1)
    memory_before = [b.clone() for b in distiller.method.buffers()]
    head_before = student.get_classifier().weight.clone()
    loss, terms = distiller(images, labels, index=index, contrast_index=contrast)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert set(terms) == {"ce", "crd"} and torch.isfinite(loss)
    assert not torch.equal(student.get_classifier().weight, head_before)  # the plain timm student trained
    assert any(not torch.equal(a, b) for a, b in zip(memory_before, distiller.method.buffers()))  # memory updated
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert not any(key.startswith(("student.", "teacher.")) for key in distiller.state_dict())


def test_teacher_gets_its_own_normalisation_and_size() -> None:
    """A ViT teacher (mean/std 0.5) under ImageNet-normalised batches: its input is timm's ``normalize_input`` of
    the batch, resized to its own 48 px; features are declared at the size it sees."""
    from timm.task.distillation import DistillationTeacher

    torch.manual_seed(3)
    teacher = timm.create_model("vit_tiny_patch16_224", img_size=48, patch_size=8, depth=1, num_classes=5).eval()
    student = timm.create_model("resnet18", num_classes=5)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    distiller = distillers.Distiller(teacher, student, "kd", data_mean=imagenet[0], data_std=imagenet[1],
                                     teacher_input_size=48).train()
    images = torch.randn(2, 3, 32, 32)
    reference = DistillationTeacher(teacher).normalize_input(
        images, torch.tensor(imagenet[0]).view(1, 3, 1, 1), torch.tensor(imagenet[1]).view(1, 3, 1, 1))
    resized = torch.nn.functional.interpolate(reference, size=(48, 48), mode="bilinear", antialias=True)
    assert torch.allclose(distiller.teacher.adapt(images), resized, atol=1e-5)
    feats, logits = distiller.teacher(images, is_feat=True)
    assert torch.allclose(logits, teacher(resized), atol=1e-5)
    assert feats[0].shape[1:] == distillers.models.feature_shapes(distiller.teacher, 32)[0] == (192, 6, 6)
    loss, terms = distiller(images, torch.tensor([0, 1]))
    assert torch.isfinite(loss) and set(terms) == {"ce", "kl"}


def test_several_teachers_average_logits() -> None:
    teacher, student, images, labels = models(4)
    torch.manual_seed(5)
    second = timm.create_model("resnet10t", num_classes=5).double().eval()
    ours = distillers.Distiller([teacher, second], student, "kd", gamma=0, alpha=1, beta=0,
                                teacher_weights=[1.0, 3.0]).train()
    loss, _ = ours(images, labels)
    with torch.no_grad():
        mixed = 0.25 * teacher(images) + 0.75 * second(images)
    expected = distillers.methods.kd_loss(student(images), mixed, 4.0)
    assert abs(loss.item() - expected.item()) < 1e-9
    with pytest.raises(UserError, match="takes one teacher"):
        distillers.Distiller([teacher, second], student, "crd", num_data=8)
