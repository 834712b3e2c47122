"""Parity of every loss with the reference fixtures (``losses.pt``, see ``shared/reference/README.md``).

The test is parametrised over every case found in the file; a case whose method has no adapter fails.

Adapter interface (``parity_adapters_a.ADAPTERS`` and ``parity_adapters_b.ADAPTERS``, keyed by
``case["method"]``): ``adapter(case) -> (module, run)`` or ``(module, run, options)``, called with float64 as
the default dtype, where
- ``module`` is the ``nn.Module`` owning the case's parameters and state, or ``None`` when the case has none;
  its ``state_dict()`` keys are the fixture keys (``params`` and ``state``) after the renames below;
- ``run(inputs) -> loss`` or ``-> (loss, loss_terms)``: ``inputs`` are the case's inputs by name (student
  inputs already require grad); ``loss`` is a 0-dim tensor, ``loss_terms`` a list of 0-dim tensors;
- ``options`` (optional dict): ``"rename"``: ``{fixture key prefix: our key prefix}`` (e.g. ``{"vid.": "stages."}``;
  also applied to the module names of ``modes``); ``"trainable"``: the parameters trained in the case's stage
  (default: ``module.main_parameters()`` for a ``Method`` in a ``main`` stage, else every parameter of ``module``
  that requires grad).

The harness loads ``params``/``state`` with ``strict=True``, puts ``module`` in train mode then applies ``modes``,
runs, backpropagates and compares with ``rtol=1e-6, atol=1e-6 * max(1, |expected|.max())`` (the README's
tolerance) and, for tensors not numerically zero, also ``atol=1e-6 * |expected|.max()``: the loss; its shape
(the reference returns ``[1]`` for SP and CRD: we require a 0-dim loss with the same number of elements); each of
``loss_terms``; every gradient of ``expected.grad`` (``None`` = our gradient is None or all zeros; our ``None``
counts as zeros); the set of trainable parameters; every buffer of ``expected_state_after``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from conftest import reference_file
from distillers.methods import Method

from . import parity_adapters_a, parity_adapters_b
from .parity import assert_grads, assert_matches

ADAPTERS: dict[str, Callable[[dict], tuple]] = {**parity_adapters_a.ADAPTERS, **parity_adapters_b.ADAPTERS}

REFERENCE = reference_file("DISTILLERS_REFERENCE", "losses.pt")
CASES: dict[str, dict] = torch.load(REFERENCE, weights_only=True)["cases"]


def _renamer(prefixes: dict[str, str]) -> Callable[[str], str]:
    def rename(key: str) -> str:
        for old, new in prefixes.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key

    return rename


def _inputs(case: dict) -> dict[str, Any]:
    """Fresh copies of the case's inputs; the student's require grad."""
    inputs = {}
    for name, value in case["inputs"].items():
        grad = name in case["student_inputs"]
        if isinstance(value, (list, tuple)):
            inputs[name] = [v.detach().clone().requires_grad_(grad) for v in value]
        else:
            inputs[name] = value.detach().clone().requires_grad_(grad)
    return inputs


def _trainable(module: nn.Module, case: dict, options: dict) -> set[str]:
    if "trainable" in options:
        chosen = list(options["trainable"])
    elif isinstance(module, Method) and case["stage"] == "main":
        chosen = list(module.main_parameters())
    else:
        chosen = [p for p in module.parameters() if p.requires_grad]
    ids = {id(p) for p in chosen}
    return {name for name, p in module.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_reference_case(case_name: str, float64: None) -> None:
    case = CASES[case_name]
    adapter = ADAPTERS.get(case["method"])
    assert adapter is not None, f"no parity adapter for method {case['method']!r} (case {case_name!r})"
    module, run, *rest = adapter(case)
    options = rest[0] if rest else {}
    rename = _renamer(options.get("rename", {}))

    if module is None:
        assert not case["params"] and not case["state"], "the case has parameters or state but the adapter no module"
    else:
        fixture_state = {**case["params"], **case["state"]}
        module.load_state_dict({rename(k): v.clone() for k, v in fixture_state.items()}, strict=True)
        module.train()
        for name, mode in case["modes"].items():
            module.get_submodule(rename(name + ".").rstrip(".")).train(mode == "train")

    inputs = _inputs(case)
    result = run(inputs)
    loss, terms = result if isinstance(result, tuple) else (result, None)
    expected = case["expected"]

    assert loss.dim() == 0, f"the loss must be a 0-dim tensor, got shape {tuple(loss.shape)}"
    if expected.get("loss_shape") is not None:
        assert loss.numel() == math.prod(expected["loss_shape"])
    assert_matches(loss.detach(), expected["loss"], "loss")
    if "loss_terms" in expected:
        assert terms is not None, "the reference records loss terms; the adapter returned none"
        count = len(expected["loss_terms"])
        assert len(terms) == count, f"{len(terms)} loss terms, expected {count}"
        for i, (term, want) in enumerate(zip(terms, expected["loss_terms"])):
            assert_matches(torch.as_tensor(term).detach(), want, f"loss_terms[{i}]")

    if loss.requires_grad:
        loss.backward()
    params = dict(module.named_parameters()) if module is not None else {}
    assert_grads(inputs, expected["grad"], params, rename)

    trainable = _trainable(module, case, options) if module is not None else set()
    assert trainable == {rename(n) for n in case["trainable_params"]}, "trainable parameters differ"

    buffers = dict(module.named_buffers()) if module is not None else {}
    for name, want in case.get("expected_state_after", {}).items():
        assert rename(name) in buffers, f"no buffer {rename(name)!r} for the fixture's {name!r}"
        assert_matches(buffers[rename(name)], want, f"state after: {name}")
