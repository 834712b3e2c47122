"""Parity of the modern methods with ``losses_modern.pt`` (see ``shared/reference/README_modern.md``).

Parametrised over every case in the file (set ``DISTILLERS_REFERENCE_MODERN`` to use another copy); a case whose
method has no adapter fails. Each case is checked twice, on fresh modules and inputs, in float64:
1. the method's explicit-tensor loss: loss, ``loss_terms``, OFD ``margins``, every gradient of ``expected.grad``,
   the trainable parameters and ``expected_state_after``;
2. the training step through ``distillers.objective.Distillation`` (``gamma * CE + alpha * KL + beta * method``
   with the class's default ``weights`` and the case's epoch), fed by stand-in networks that return the stored
   features/logits, as the reference was driven: ``expected_train``'s loss, its student-input gradients and the
   state after (so the method runs exactly one forward per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from conftest import reference_file
from distillers.methods import METHODS, Method
from distillers.methods.dist import DIST
from distillers.methods.logit_standardization import KDLS, kd_ls_loss
from distillers.methods.mlkd import EXTRA_TEMPERATURES, MLKD
from distillers.methods.ofd import OFD
from distillers.methods.reviewkd import ReviewKD
from distillers.objective import Distillation

from .parity import assert_grads, assert_matches

CASES: dict[str, dict] = torch.load(reference_file("DISTILLERS_REFERENCE_MODERN", "losses_modern.pt"),
                                    weights_only=True)["cases"]
UNUSED = torch.empty(0)  # stands for feature entries the methods must not read (stem, pooled embedding for OFD)


@dataclass
class View:
    """What the stand-in student and teacher return, and the batch entries that reach ``Step.extra``."""

    logits_s: Tensor
    logits_t: Tensor
    feats_s: list[Tensor] = field(default_factory=list)
    feats_t: list[Tensor] = field(default_factory=list)
    feats_t_preact: list[Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Adapter:
    method: Method
    loss: Callable[[dict], tuple[Tensor, list[Tensor] | None]]  # explicit tensors -> (expected.loss, loss_terms)
    view: Callable[[dict], View] | None = None  # None: the case records no training step
    rename: Callable[[str], str] = lambda key: key  # fixture parameter name -> ours


class StandIn(nn.Module):
    """A network returning stored outputs: ``(feats, logits)`` with ``is_feat``, pre-activation ones if asked."""

    def __init__(self, feats: list[Tensor], logits: Tensor, preact_feats: list[Tensor] | None = None) -> None:
        super().__init__()
        self.feats, self.logits, self.preact_feats = feats, logits, preact_feats

    def forward(self, images: Tensor, is_feat: bool = False, preact: bool = False):
        feats = self.preact_feats if preact and self.preact_feats is not None else self.feats
        return (list(feats), self.logits) if is_feat else self.logits


def _logits_view(inputs: dict) -> View:
    return View(logits_s=inputs["logit_s"], logits_t=inputs["logit_t"])


def dkd(case: dict) -> Adapter:  # dkd and dkd_ls
    h = case["hparams"]
    method = METHODS.get(case["method"])(alpha=h["alpha"], beta=h["beta"], T=h["T"], warmup=h["warmup"])
    assert method.logit_stand == h.get("logit_stand", False)

    def loss(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        total, tckd, nckd = method.loss(inputs["logit_s"], inputs["logit_t"], inputs["target"])
        return total, [tckd, nckd]

    return Adapter(method, loss, _logits_view)


def kd_ls(case: dict) -> Adapter:
    h = case["hparams"]
    assert h["logit_stand"]
    method = KDLS(T=h["T"], kd_weight=h["kd_weight"])
    return Adapter(method, lambda inputs: (kd_ls_loss(inputs["logit_s"], inputs["logit_t"], method.T), None),
                   _logits_view)


def dist(case: dict) -> Adapter:
    h = case["hparams"]
    method = DIST(beta=h["beta"], gamma=h["gamma"], tau=h["tau"], eps=h["eps"])

    def loss(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        total, inter, intra = method.loss(inputs["logit_s"], inputs["logit_t"])
        return total, [inter, intra]

    return Adapter(method, loss)


def mlkd(case: dict) -> Adapter:  # mlkd and mlkd_ls
    h = case["hparams"]
    method = METHODS.get(case["method"])(T=h["T"], kd_weight=h["kd_weight"], ce_weight=h["ce_weight"])
    assert isinstance(method, MLKD) and method.logit_stand == h["logit_stand"]
    assert tuple(h["extra_temperatures"]) == EXTRA_TEMPERATURES

    def loss(inputs: dict) -> tuple[Tensor, list[Tensor]]:
        terms = list(method.loss(inputs["logit_s_weak"], inputs["logit_s_strong"], inputs["logit_t_weak"],
                                 inputs["logit_t_strong"]))
        return sum(terms), terms

    def view(inputs: dict) -> View:
        return View(logits_s=inputs["logit_s_weak"], logits_t=inputs["logit_t_weak"],
                    extra={"logits_s_strong": inputs["logit_s_strong"], "logits_t_strong": inputs["logit_t_strong"]})

    return Adapter(method, loss, view)


def reviewkd(case: dict) -> Adapter:
    h = case["hparams"]
    assert h["stu_preact"] == ReviewKD.preact and ReviewKD.teacher_preact
    method = ReviewKD(h["in_channels"], h["out_channels"], h["reviewkd_weight"], h["warmup_epochs"])
    # We read spatial sizes from the tensors; the reference's configured ones must agree with them.
    inputs = case["inputs"]
    assert h["shapes"] == [1, *(f.shape[-1] for f in reversed(inputs["feats_s"]))]
    assert h["out_shapes"] == [1, *(f.shape[-1] for f in reversed(inputs["feats_t"]))]

    def loss(inputs: dict) -> tuple[Tensor, None]:
        return method.loss(inputs["feats_s"], inputs["pooled_s"], inputs["feats_t"], inputs["pooled_t"]), None

    def view(inputs: dict) -> View:
        preact_t = [UNUSED, *inputs["feats_t"], inputs["pooled_t"]]
        # The post-ReLU teacher features a real network would return: the method must not use them.
        post_t = [UNUSED, *(f.relu() for f in inputs["feats_t"]), inputs["pooled_t"]]
        return View(logits_s=inputs["logit_s"], logits_t=inputs["logit_t"],
                    feats_s=[UNUSED, *inputs["feats_s"], inputs["pooled_s"]], feats_t=post_t, feats_t_preact=preact_t)

    return Adapter(method, loss, view)


def ofd(case: dict) -> Adapter:
    h = case["hparams"]
    assert h["kernel_size"] == 1 and OFD.preact
    inputs = case["inputs"]
    method = OFD(h["s_channels"], h["t_channels"], inputs["t_bn_weight"], inputs["t_bn_bias"], h["feat_weight"])

    def view(inputs: dict) -> View:
        return View(logits_s=inputs["logit_s"], logits_t=inputs["logit_t"],
                    feats_s=[UNUSED, *inputs["feats_s"], UNUSED], feats_t=[UNUSED, *inputs["feats_t"], UNUSED])

    return Adapter(method, lambda inputs: (method.loss(inputs["feats_s"], inputs["feats_t"]), None), view,
                   rename=lambda key: key.removeprefix("connectors."))


ADAPTERS: dict[str, Callable[[dict], Adapter]] = {
    "dkd": dkd, "dkd_ls": dkd, "kd_ls": kd_ls, "dist": dist, "mlkd": mlkd, "mlkd_ls": mlkd, "reviewkd": reviewkd,
    "ofd": ofd,
}


def prepare(case: dict) -> tuple[Adapter, dict]:
    """A fresh adapter with the fixture's parameters and modes, and fresh inputs (the student's require grad)."""
    make = ADAPTERS.get(case["method"])
    assert make is not None, f"no parity adapter for method {case['method']!r}"
    adapter = make(case)
    method = adapter.method
    method.load_state_dict({adapter.rename(k): v.clone() for k, v in case["params"].items()}, strict=True)
    assert not case["state"], "these methods keep no state besides module buffers"
    method.train()
    for name, mode in case["modes"].items():
        assert mode == "train", f"{name}: the engine keeps method modules in train mode"
    inputs = {}
    for name, value in case["inputs"].items():
        if value is None:
            continue
        grad = name in case["student_inputs"]
        copy = [v.detach().clone().requires_grad_(grad) for v in value] if isinstance(value, list) else \
            value.detach().clone().requires_grad_(grad and value.is_floating_point())
        inputs[name] = copy
    return adapter, inputs


def assert_state_after(case: dict, adapter: Adapter) -> None:
    buffers = dict(adapter.method.named_buffers())
    for name, want in case.get("expected_state_after", {}).items():
        assert adapter.rename(name) in buffers, f"no buffer for the fixture's {name!r}"
        assert_matches(buffers[adapter.rename(name)], want, f"state after: {name}")


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_loss(case_name: str, float64: None) -> None:
    case = CASES[case_name]
    adapter, inputs = prepare(case)
    expected = case["expected"]
    loss, terms = adapter.loss(inputs)

    assert loss.dim() == 0 and list(loss.shape) == list(expected["loss_shape"])
    assert_matches(loss.detach(), expected["loss"], "loss")
    if "loss_terms" in expected:
        assert terms is not None and len(terms) == len(expected["loss_terms"]), "loss terms differ in number"
        for i, (term, want) in enumerate(zip(terms, expected["loss_terms"])):
            assert_matches(term.detach(), want, f"loss_terms[{i}]")
    if "margins" in expected:
        assert len(adapter.method.margins) == len(expected["margins"])
        for i, (got, want) in enumerate(zip(adapter.method.margins, expected["margins"])):
            assert_matches(got, want, f"margins[{i}]")

    loss.backward()
    method = adapter.method
    assert_grads(inputs, expected["grad"], dict(method.named_parameters()), adapter.rename)
    trainable = {id(p) for p in method.main_parameters()}
    assert {name for name, p in method.named_parameters() if id(p) in trainable} == \
        {adapter.rename(name) for name in case["trainable_params"]}, "trainable parameters differ"
    assert_state_after(case, adapter)


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_training_step(case_name: str, float64: None) -> None:
    case = CASES[case_name]
    adapter, inputs = prepare(case)
    if "expected_train" not in case:
        assert adapter.view is None, "the adapter feeds a training step but the case records none"
        return
    hparams, expected = case["hparams"], case["expected_train"]
    method = adapter.method
    assert method.weights.gamma == hparams["ce_weight"] and method.weights.alpha == 0 and method.weights.beta == 1
    view = adapter.view(inputs)
    objective = Distillation(StandIn(view.feats_s, view.logits_s), StandIn(view.feats_t, view.logits_t,
                                                                          view.feats_t_preact), method, method.weights)
    objective.train()
    if "epoch" in inputs:
        objective.set_epoch(int(inputs["epoch"]))
    batch = {"image": torch.zeros(len(inputs["target"])), "target": inputs["target"], **view.extra}
    _, terms = objective(batch)
    total = sum(terms.values())

    assert_matches(total.detach(), expected["loss"], "training loss")
    total.backward()
    assert_grads(inputs, expected["grad"], {}, adapter.rename)
    assert_state_after(case, adapter)
