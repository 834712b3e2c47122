"""Behaviour of fitnet, at, sp, cc, vid, rkd, pkt, nst and kdsvd beyond reference parity: registration,
building from a pair's feature metadata, which features each consumes, pair checks and loss properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Method, Pair, Step, Weights
from distillers.methods.at import at_loss
from distillers.methods.common import ConvReg, LinearEmbed, pool
from distillers.methods.kdsvd import kdsvd_loss
from distillers.methods.nst import nst_loss
from distillers.methods.pkt import pkt_loss
from distillers.methods.rkd import rkd_loss
from distillers.methods.sp import similarity_loss
from distillers.methods.vid import VIDStage
from distillers.models.base import FeatureInfo

INPUT_SIZE = 8
REDUCTIONS = (1, 1, 2, 4)  # stem and three stages: 8x8, 8x8, 4x4, 2x2 maps for an 8x8 input


class FeatureStub(nn.Module):
    """A model reduced to the feature metadata methods are built from."""

    def __init__(self, channels: list[int], embedding: int, reductions: tuple[int, ...] = REDUCTIONS) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(c, r) for c, r in zip(channels, reductions)] + [FeatureInfo(embedding, None)]


def make_pair(s_channels: list[int], t_channels: list[int], s_reductions: tuple[int, ...] = REDUCTIONS,
              t_reductions: tuple[int, ...] = REDUCTIONS, **options) -> Pair:
    return Pair(student=FeatureStub(s_channels, s_channels[-1], s_reductions),
                teacher=FeatureStub(t_channels, t_channels[-1], t_reductions),
                student_name="tiny_s", teacher_name="tiny_t", input_size=INPUT_SIZE,
                options=MethodOptions(**options))


def make_step(pair: Pair, batch: int = 6, seed: int = 0) -> Step:
    """Random post-ReLU features of the pair's shapes; the student's require grad, the teacher's are detached."""
    generator = torch.Generator().manual_seed(seed)

    def feats(shapes: list[tuple[int, ...]], grad: bool) -> list[Tensor]:
        return [torch.randn(batch, *s, generator=generator).abs().requires_grad_(grad) for s in shapes]

    return Step(feats_s=feats(pair.student_shapes, True), feats_t=feats(pair.teacher_shapes, False),
                logits_s=torch.randn(batch, 10, generator=generator),
                logits_t=torch.randn(batch, 10, generator=generator), target=torch.arange(batch) % 10)


def total(value: Tensor | dict[str, Tensor]) -> Tensor:
    return sum(value.values()) if isinstance(value, dict) else value


# name, seed alias, beta, indices of the student features the loss consumes (of 5: stem, 3 stages, embedding)
METHOD_TABLE = [
    ("fitnet", "hint", 100.0, [2]),
    ("at", "attention", 1000.0, [1, 2, 3]),
    ("sp", "similarity", 3000.0, [3]),
    ("cc", "correlation", 0.02, [4]),
    ("vid", None, 1.0, [1, 2, 3]),
    ("rkd", None, 1.0, [4]),
    ("pkt", None, 30000.0, [4]),
    ("nst", None, 50.0, [1, 2, 3]),
    ("kdsvd", None, 1.0, [1, 2, 3]),
]


@pytest.mark.parametrize("name, alias, beta, consumed", METHOD_TABLE, ids=[row[0] for row in METHOD_TABLE])
def test_registered_with_seed_defaults(name: str, alias: str | None, beta: float, consumed: list[int]) -> None:
    cls = METHODS.get(name)
    assert issubclass(cls, Method) and cls.name == name
    if alias is not None:
        assert METHODS.get(alias) is cls
    assert cls.weights == Weights(gamma=1.0, alpha=0.0, beta=beta)
    assert "arXiv" in cls.paper and cls.__doc__
    assert not (cls.preact or cls.needs_index or cls.needs_contrast or cls.init_stage)


def test_kdsvd_says_its_weight_is_not_the_seeds() -> None:
    assert "None" in METHODS.get("kdsvd").weights_note


@pytest.mark.parametrize("name, alias, beta, consumed", METHOD_TABLE, ids=[row[0] for row in METHOD_TABLE])
def test_one_step_uses_the_reference_features(name: str, alias: str | None, beta: float, consumed: list[int]) -> None:
    channels = [4, 8, 8, 16]
    pair = make_pair(channels, channels if name == "kdsvd" else [6, 12, 12, 24], feat_dim=5)
    method = METHODS.get(name).build(pair)
    step = make_step(pair)
    loss = total(method(step))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    with_grad = [i for i, f in enumerate(step.feats_s) if f.grad is not None and f.grad.any()]
    assert with_grad == consumed
    # Every owned parameter is trained (a conv bias before BatchNorm gets an exactly cancelling, ~0 gradient).
    for param_name, param in method.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {param_name}"


def test_fitnet_hint_layer_option_picks_that_feature() -> None:
    pair = make_pair([4, 8, 8, 16], [6, 12, 12, 24], hint_layer=1)
    method = METHODS.get("hint").build(pair)
    assert method.regress_s.conv.weight.shape == (12, 8, 1, 1)
    step = make_step(pair)
    method(step).backward()
    assert [i for i, f in enumerate(step.feats_s) if f.grad is not None] == [1]


def test_cc_heads_are_sized_from_the_embeddings_and_feat_dim() -> None:
    method = METHODS.get("cc").build(make_pair([4, 8, 8, 16], [6, 12, 12, 24], feat_dim=7))
    assert method.embed_s.linear.weight.shape == (7, 16)
    assert method.embed_t.linear.weight.shape == (7, 24)


def test_vid_has_one_stage_per_zipped_stage_with_the_initial_variance() -> None:
    method = METHODS.get("vid").build(make_pair([4, 8, 8, 16], [6, 12, 12, 24]))
    assert [stage.regressor[0].weight.shape[:2] for stage in method.stages] == [(12, 8), (12, 8), (24, 16)]
    for stage in method.stages:
        variance = F.softplus(stage.log_scale) + stage.eps
        torch.testing.assert_close(variance, torch.full_like(variance, 5.0))


@pytest.mark.parametrize("options, s_reductions, expected", [
    ({"hint_layer": 4}, REDUCTIONS, "hint_layer 4 is the pooled embedding"),
    ({"hint_layer": 7}, REDUCTIONS, "hint_layer 7 is out of range"),
    ({}, (1, 1, 8, 8), "no FitNet regressor maps a 1x1 student map onto a 4x4 teacher map"),
])
def test_fitnet_rejects_pairs_it_cannot_regress(options: dict, s_reductions: tuple, expected: str) -> None:
    pair = make_pair([4, 8, 8, 16], [6, 12, 12, 24], s_reductions=s_reductions, **options)
    with pytest.raises(UserError, match=expected) as error:
        METHODS.get("fitnet").build(pair)
    assert "tiny_t -> tiny_s" in str(error.value)


def test_kdsvd_rejects_unequal_stage_channels() -> None:
    with pytest.raises(UserError, match=r"equal stage channels, got student \[8, 8, 16\] and teacher \[8, 12, 16\]"):
        METHODS.get("kdsvd").build(make_pair([4, 8, 8, 16], [4, 8, 12, 16]))


@pytest.mark.parametrize("s_shape, t_shape, kind, kernel, stride", [
    ((3, 8, 8), (5, 4, 4), nn.Conv2d, (3, 3), (2, 2)),
    ((3, 4, 4), (5, 8, 8), nn.ConvTranspose2d, (4, 4), (2, 2)),
    ((3, 5, 5), (5, 3, 3), nn.Conv2d, (3, 3), (1, 1)),
    ((2, 3, 4, 4), (2, 5, 4, 4), nn.Conv2d, (1, 1), (1, 1)),  # fixture-style shapes with a batch dimension
])
def test_convreg_branches_map_student_onto_teacher_shape(s_shape, t_shape, kind, kernel, stride) -> None:
    regressor = ConvReg(s_shape, t_shape)
    assert type(regressor.conv) is kind
    assert regressor.conv.kernel_size == kernel and regressor.conv.stride == stride
    out = regressor(torch.randn(2, *s_shape[-3:]))
    assert out.shape == (2, *t_shape[-3:]) and (out >= 0).all()


def test_convreg_without_relu_keeps_negative_values() -> None:
    out = ConvReg((3, 4, 4), (5, 4, 4), use_relu=False)(torch.randn(4, 3, 4, 4))
    assert (out < 0).any()


def test_convreg_refuses_a_smaller_student_map_that_is_not_half() -> None:
    assert ConvReg.why_unsupported((3, 3, 3), (5, 8, 8)) is not None
    with pytest.raises(ValueError, match="3x3 student map onto a 8x8 teacher map"):
        ConvReg((3, 3, 3), (5, 8, 8))


def test_linear_embed_flattens() -> None:
    assert LinearEmbed(12, 5)(torch.randn(2, 3, 2, 2)).shape == (2, 5)


@pytest.mark.parametrize("s_side, t_side", [(8, 4), (2, 4), (4, 4)])
def test_pool_averages_the_larger_map_down_to_the_smaller(s_side: int, t_side: int) -> None:
    s, t = torch.randn(2, 3, s_side, s_side), torch.randn(2, 5, t_side, t_side)
    pooled_s, pooled_t = pool(s, t)
    side = min(s_side, t_side)
    assert pooled_s.shape == (2, 3, side, side) and pooled_t.shape == (2, 5, side, side)
    torch.testing.assert_close(pooled_s, F.adaptive_avg_pool2d(s, side))
    torch.testing.assert_close(pooled_t, F.adaptive_avg_pool2d(t, side))


def _maps(seed: int, channels: tuple[int, ...] = (4, 8), sides: tuple[int, ...] = (4, 2)) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, c, s, s, generator=generator).abs() for c, s in zip(channels, sides)]


@pytest.mark.parametrize("loss_fn", [at_loss, nst_loss, kdsvd_loss], ids=["at", "nst", "kdsvd"])
def test_stage_losses_vanish_only_when_student_equals_teacher(loss_fn) -> None:
    g_t = _maps(0)
    assert all(abs(term.item()) < 1e-6 for term in loss_fn([g.clone() for g in g_t], g_t))
    assert sum(loss_fn(_maps(1), g_t)).item() > 1e-4


def test_sp_and_pkt_ignore_feature_scale() -> None:
    f_t = torch.rand(6, 10)
    assert similarity_loss(3.0 * f_t, f_t).item() < 1e-12
    assert abs(pkt_loss(3.0 * f_t, f_t).item()) < 1e-6
    assert similarity_loss(torch.rand(6, 10), f_t).item() > 0
    assert pkt_loss(torch.rand(6, 10), f_t).item() > 0


def test_rkd_relations_ignore_scale_and_forward_names_weighted_parts() -> None:
    f_t = torch.randn(6, 10)
    assert all(part.item() < 1e-10 for part in rkd_loss(2.5 * f_t, f_t))
    pair = make_pair([4, 8, 8, 16], [6, 12, 12, 24])
    method = METHODS.get("rkd").build(pair)
    step = make_step(pair)
    loss_d, loss_a = rkd_loss(step.feats_s[-1], step.feats_t[-1])
    assert method(step) == {"rkd_distance": 25 * loss_d, "rkd_angle": 50 * loss_a}


def test_vid_stage_loss_is_the_mean_gaussian_nll() -> None:
    stage = VIDStage(3, 5, 5, init_pred_var=2.0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    mean = stage.regressor(s)
    var = torch.full((1, 5, 1, 1), 2.0)
    expected = (0.5 * ((mean - t) ** 2 / var + var.log())).mean()
    torch.testing.assert_close(stage(s, t), expected, rtol=1e-5, atol=1e-6)
