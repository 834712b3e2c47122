"""Every registered method on the seed's 13 CIFAR-100 teacher/student pairs, with the real architectures.

For each (method, pair): build the method from the pair, run one forward + backward of
``distillers.objective.Distillation`` on a 2-image 32x32 batch, and check the loss is finite and reaches the
student. Where the seed's table says N/A (FSP, and KD-SVD, need equal stage widths) ``build`` must refuse with a
one-line UserError instead. Models are random-init and built once per name and role; teacher outputs are memoised per
batch (the teacher is frozen and never changes), which keeps ~300 cases within a few minutes on a busy CPU.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Weights
from distillers.models import create_model
from distillers.objective import Distillation, InitStage

# The seed README's tables: same-family pairs, then cross-family pairs.
SEED_PAIRS = [
    ("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"), ("resnet110", "resnet20"),
    ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"), ("vgg13", "vgg8"),
    ("vgg13", "MobileNetV2"), ("ResNet50", "MobileNetV2"), ("ResNet50", "vgg8"), ("resnet32x4", "ShuffleV1"),
    ("resnet32x4", "ShuffleV2"), ("wrn_40_2", "ShuffleV1"),
]
# Pairs whose stage widths differ: FSP's N/A in the seed table (it has no FSP row for cross-family pairs at all)
# and KD-SVD's equal-channel requirement.
UNEQUAL_WIDTHS = {("wrn_40_2", "wrn_40_1")} | set(SEED_PAIRS[7:])
NOT_APPLICABLE = {("fsp", pair): "FSP needs equal channel lists" for pair in UNEQUAL_WIDTHS} | \
                 {("kdsvd", pair): "it needs equal stage channels" for pair in UNEQUAL_WIDTHS}

BATCH, NUM_DATA, NCE_K, FEAT_DIM = 2, 32, 16, 16
# RKD's relations are constant for two samples (one normalised distance of 1, cosines of 1): its loss and gradient are
# exactly 0 there, so it gets a third image.
BATCH_OF = {"rkd": 3}
OPTIONS = MethodOptions(feat_dim=FEAT_DIM, nce_k=NCE_K)
ALL_ONES = Weights(gamma=1.0, alpha=1.0, beta=1.0)
METHOD_ONLY = Weights(gamma=0.0, alpha=0.0, beta=1.0)
# Methods whose own main-stage loss is 0 by design, as in the seed: KD is the objective's alpha term, AB and FSP
# distil only in their initialisation stage.
ZERO_MAIN_LOSS = {"kd", "ab", "fsp"}

_models: dict[tuple[str, str], nn.Module] = {}
_batches: dict[int, dict[str, Tensor]] = {}


def model(name: str, role: str = "student") -> nn.Module:
    """The random-init model of that name and role, built once for the module (no optimiser step ever changes it)."""
    if (name, role) not in _models:
        torch.manual_seed(len(_models))
        _models[name, role] = create_model(name, num_classes=100)
    return _models[name, role]


def batch(size: int, strong_view: bool) -> dict[str, Tensor]:
    """A fixed batch with CRD's indices and, for a method that trains on two views (MLKD), the strong view."""
    if size not in _batches:
        generator = torch.Generator().manual_seed(size)
        index = torch.tensor([3, 7, 11][:size])
        negatives = torch.randint(0, NUM_DATA, (size, NCE_K), generator=generator)
        _batches[size] = dict(image=torch.randn(size, 3, 32, 32, generator=generator),
                              image_strong=torch.randn(size, 3, 32, 32, generator=generator),
                              target=torch.tensor([5, 42, 99][:size]), index=index,
                              contrast_index=torch.cat([index[:, None], negatives], dim=1))
    chosen = _batches[size]
    return chosen if strong_view else {key: value for key, value in chosen.items() if key != "image_strong"}


class MemoisedTeacher:
    """Memoise a frozen teacher's outputs per (input, is_feat, preact, train mode).

    The output for one input never changes (no grad, no optimiser step; train mode, used by OFD, is part of the
    key), so running ResNet50 once per mode instead of once per method is the same computation.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.compute = teacher.forward
        self.teacher = teacher
        self.cache: dict[tuple[Any, ...], Any] = {}

    def __call__(self, images: Tensor, is_feat: bool = False, preact: bool = False) -> Any:
        key = (images.data_ptr(), tuple(images.shape), is_feat, preact, self.teacher.training)
        if key not in self.cache:
            with torch.no_grad():
                self.cache[key] = self.compute(images, is_feat=is_feat, preact=preact)
        out = self.cache[key]
        return (list(out[0]), out[1]) if is_feat else out


def teacher(name: str) -> nn.Module:
    """The teacher of that name, with its forward memoised (a separate instance from a student of the same name)."""
    net = model(name, role="teacher")
    if not isinstance(net.__dict__.get("forward"), MemoisedTeacher):
        net.forward = MemoisedTeacher(net)  # instance attribute: nn.Module.__call__ dispatches to it
    return net


def make_pair(teacher_name: str, student_name: str) -> Pair:
    return Pair(student=model(student_name), teacher=teacher(teacher_name), student_name=student_name,
                teacher_name=teacher_name, num_classes=100, num_data=NUM_DATA, input_size=32, options=OPTIONS)


def student_grads(student: nn.Module) -> list[Tensor]:
    return [p.grad for p in student.parameters() if p.grad is not None]


def assert_finite_nonzero(grads: list[Tensor], what: str) -> None:
    assert grads, f"no gradient reached {what}"
    assert all(torch.isfinite(g).all() for g in grads), f"non-finite gradient in {what}"
    assert any(g.abs().sum() > 0 for g in grads), f"all gradients of {what} are zero"


def method_terms(terms: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: value for name, value in terms.items() if name not in ("ce", "kl")}


CASES = [pytest.param(method, pair, id=f"{method}-{pair[0]}-{pair[1]}")
         for method in METHODS.names() for pair in SEED_PAIRS]



def test_unequal_widths_follow_the_models_metadata():
    """The N/A table above is exactly the pairs whose declared feature channels differ."""
    assert len(set(SEED_PAIRS)) == 13
    for teacher_name, student_name in SEED_PAIRS:
        pair = make_pair(teacher_name, student_name)
        channels_s = [shape[0] for shape in pair.student_shapes[:-1]]
        channels_t = [shape[0] for shape in pair.teacher_shapes[:-1]]
        assert (channels_s != channels_t) == ((teacher_name, student_name) in UNEQUAL_WIDTHS)


@pytest.mark.parametrize("method_name,pair_names", CASES)
def test_method_on_seed_pair(method_name: str, pair_names: tuple[str, str]) -> None:
    method_cls = METHODS.get(method_name)
    teacher_name, student_name = pair_names
    pair = make_pair(teacher_name, student_name)
    expected_refusal = NOT_APPLICABLE.get((method_name, pair_names))
    if expected_refusal is not None:
        with pytest.raises(UserError) as refused:
            method_cls.build(pair)
        message = str(refused.value)
        assert expected_refusal in message and teacher_name in message and student_name in message
        assert "\n" not in message
        return

    torch.manual_seed(0)
    method = method_cls.build(pair)
    size = BATCH_OF.get(method_name, BATCH)
    method.check_batch_size(size)
    student = pair.student
    strong = getattr(method_cls, "needs_strong_view", False)
    objective = Distillation(student, pair.teacher, method, ALL_ONES, OPTIONS.kd_T).train()
    student.zero_grad(set_to_none=True)
    logits, terms = objective(batch(size, strong))

    # Every term finite and scalar, the method's own terms present.
    assert logits.shape == (size, 100)
    own = method_terms(terms)
    assert {"ce", "kl"} <= set(terms) and own, f"no method term in {sorted(terms)}"
    for name, value in terms.items():
        assert value.ndim == 0 and math.isfinite(value.item()), f"term {name} = {value}"

    # The method's loss alone reaches the student (for AB and FSP the initialisation stage does, below) ...
    own_loss = sum(own.values())
    if method_name in ZERO_MAIN_LOSS:
        assert own_loss.item() == 0.0
    else:
        params = [p for p in student.parameters() if p.requires_grad]
        grads = torch.autograd.grad(own_loss, params, retain_graph=True, allow_unused=True)
        assert_finite_nonzero([g for g in grads if g is not None], f"the student from {method_name}'s loss alone")
    # ... and the whole objective's gradients are finite.
    sum(terms.values()).backward()
    assert_finite_nonzero(student_grads(student), "the student")

    if method_cls.init_stage:
        init = InitStage(objective).train()
        trained = [p for p in init.trained.parameters() if p.requires_grad]
        for parameter in trained:
            parameter.grad = None
        _, init_terms = init(batch(size, strong))
        assert set(init_terms) == {"init"} and math.isfinite(init_terms["init"].item())
        init_terms["init"].backward()
        assert_finite_nonzero([p.grad for p in trained if p.grad is not None], f"{method_name}'s init-stage modules")
    student.zero_grad(set_to_none=True)
