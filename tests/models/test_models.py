"""The model zoo: a contract every registered model keeps, and RepDistiller's recorded facts (``models.json``).

Parametrised over the registry's CIFAR models (every registered name that ``models.json`` records; the ImageNet
models have their own file, checked against torchvision instead), so a model is tested as soon as it is registered
and recorded. The per-model
fixture is module-scoped: pytest runs all checks of one model before building the next, which keeps memory small.
"""

from __future__ import annotations

import copy
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from conftest import reference_file
from distillers.models import MODELS, FeatureInfo, create_model, feature_shapes

with open(reference_file("DISTILLERS_MODELS_REFERENCE", "models.json")) as _handle:
    RECORDED = set(json.load(_handle)["models"])
CIFAR_MODELS = [name for name in MODELS.names() if name in RECORDED]

# ShuffleV1/V2 keep PyTorch's default initialisation, as in RepDistiller; the other families use He-normal convs.
DEFAULT_INIT_MODELS = {"ShuffleV1", "ShuffleV2"}
NUM_CLASSES = 100
INPUT_SHAPE = (2, 3, 32, 32)


@dataclass
class Case:
    name: str
    ref: dict[str, Any] | None  # the models.json entry, None for a model RepDistiller does not have
    model: nn.Module
    x: Tensor
    logits: Tensor
    plain: tuple[list[Tensor], Tensor]
    preact: Any  # whatever model(x, is_feat=True, preact=True) returns (a list for ResNet50)

    @property
    def recorded(self) -> dict[str, Any]:
        """The reference entry (every parametrised model has one)."""
        assert self.ref is not None
        return self.ref



@pytest.fixture(scope="module", params=CIFAR_MODELS)
def case(request: pytest.FixtureRequest, models_reference: dict) -> Case:
    name = request.param
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).eval()
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        plain = model(x, is_feat=True)
        preact = model(x, is_feat=True, preact=True)
    return Case(name, models_reference["models"].get(name), model, x, logits, plain, preact)


def module_names(model: nn.Module) -> dict[int, str]:
    """Qualified name of every submodule of ``model``, keyed by identity."""
    return {id(module): name for name, module in model.named_modules()}


def random_state_from_reference(entries: list[dict], generator: torch.Generator) -> dict[str, Tensor]:
    """A RepDistiller-like state dict built only from the recorded names, shapes and dtypes."""
    state = {}
    for entry in entries:
        dtype = getattr(torch, entry["dtype"])
        if dtype.is_floating_point:
            tensor = 0.05 * torch.randn(entry["shape"], generator=generator, dtype=dtype)
            if entry["name"].endswith("running_var"):
                tensor = tensor.abs() + 0.5  # a variance must be positive for a finite eval forward
        else:
            tensor = torch.randint(0, 1000, entry["shape"], generator=generator, dtype=dtype)
        state[entry["name"]] = tensor
    return state


# ---------------------------------------------------------------- the contract, for every registered model


def test_registry_holds_every_reference_model(models_reference: dict) -> None:
    names = MODELS.names()
    assert len(names) == len(set(names))
    missing = set(models_reference["models"]) - set(names)
    assert not missing, f"models.json models not registered: {sorted(missing)}"


def test_forward_and_declared_features_agree(case: Case) -> None:
    feats, logits = case.plain
    feats_pre, logits_pre = case.preact
    assert case.logits.shape == (INPUT_SHAPE[0], NUM_CLASSES)
    assert torch.equal(logits, case.logits) and torch.equal(logits_pre, case.logits)
    info = case.model.feature_info
    assert all(isinstance(entry, FeatureInfo) for entry in info)
    assert [entry.reduction is None for entry in info] == [False] * (len(info) - 1) + [True]
    assert [tuple(f.shape[1:]) for f in feats] == feature_shapes(case.model, INPUT_SHAPE[-1])
    assert [f.shape for f in feats_pre] == [f.shape for f in feats]
    assert torch.equal(feats_pre[0], feats[0]) and torch.equal(feats_pre[-1], feats[-1])  # stem and embedding


def test_num_classes_sets_the_classifier(case: Case) -> None:
    model = create_model(case.name, num_classes=7).eval()
    with torch.no_grad():
        assert model(case.x).shape == (INPUT_SHAPE[0], 7)


def test_bn_before_relu_are_submodule_batchnorms(case: Case) -> None:
    try:
        bns = case.model.get_bn_before_relu()
    except NotImplementedError:
        return  # allowed by the contract (RepDistiller's ShuffleNets); the reference test pins who may do it
    submodules = {id(module) for module in case.model.modules()}
    assert bns and all(isinstance(bn, nn.BatchNorm2d) and id(bn) in submodules for bn in bns)


def test_feat_modules_are_submodules_holding_the_backbone(case: Case) -> None:
    modules = case.model.get_feat_modules()
    submodules = {id(module) for module in case.model.modules()}
    assert isinstance(modules, nn.ModuleList) and all(id(m) in submodules for m in modules)
    backbone = {id(p) for p in modules.parameters()}
    classifier_params = sum(p.numel() for p in case.model.parameters() if id(p) not in backbone)
    assert 0 < classifier_params < sum(p.numel() for p in case.model.parameters())


def test_repdistiller_style_checkpoint_round_trips(case: Case) -> None:
    model = copy.deepcopy(case.model)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1.01)  # a small positive factor keeps variances positive and deep nets finite
    # RepDistiller's checkpoint layout: {"model": state_dict}, read back as untrusted input.
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "epoch": 240}, buffer)
    buffer.seek(0)
    restored = copy.deepcopy(case.model)
    restored.load_state_dict(torch.load(buffer, weights_only=True)["model"], strict=True)
    for (name, tensor), original in zip(restored.state_dict().items(), model.state_dict().values()):
        assert torch.equal(tensor, original), name
    with torch.no_grad():
        logits, expected = restored(case.x), model(case.x)
    assert torch.equal(logits, expected) and not torch.equal(logits, case.logits)


# ---------------------------------------------------------------- RepDistiller's recorded facts (models.json)


def test_class_and_parameter_counts(case: Case) -> None:
    ref = case.recorded
    assert type(case.model).__name__ == ref["class"]
    assert sum(p.numel() for p in case.model.parameters()) == ref["num_parameters"]
    assert sum(p.numel() for p in case.model.parameters() if p.requires_grad) == ref["num_trainable_parameters"]


def test_state_dict_names_shapes_dtypes_in_order(case: Case) -> None:
    ref = case.recorded
    parameters = dict(case.model.named_parameters())
    ours = [
        {
            "name": name,
            "shape": list(tensor.shape),
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "kind": "parameter" if name in parameters else "buffer",
        }
        for name, tensor in case.model.state_dict().items()
    ]
    assert len(ours) == ref["num_state_dict_entries"]
    assert ours == ref["state_dict"]


def test_reference_shaped_checkpoint_loads_strictly(case: Case) -> None:
    state = random_state_from_reference(case.recorded["state_dict"], torch.Generator().manual_seed(1))
    model = copy.deepcopy(case.model)
    model.load_state_dict(state, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_logits_and_feature_shapes(case: Case) -> None:
    ref = case.recorded
    feats, _ = case.plain
    feats_pre, _ = case.preact
    assert list(case.logits.shape) == ref["logits_shape"]
    assert [list(f.shape) for f in feats] == ref["feat_shapes"]
    assert [list(f.shape) for f in feats_pre] == ref["feat_shapes_preact"]


def test_declared_feature_shapes_match_reference(case: Case) -> None:
    recorded = [tuple(shape[1:]) for shape in case.recorded["feat_shapes"]]
    assert feature_shapes(case.model, 32) == recorded


def test_preact_changes_exactly_the_recorded_features(case: Case) -> None:
    ref = case.recorded
    feats, _ = case.plain
    feats_pre, _ = case.preact
    assert [not torch.equal(a, b) for a, b in zip(feats, feats_pre)] == ref["preact_differs"]


def test_preact_result_container(case: Case) -> None:
    ref = case.recorded
    # models.json notes: "ResNet50 returns a list [feats, logits] (not a tuple) when preact=True".
    assert type(case.preact) is (list if case.name == "ResNet50" else tuple)
    assert type(case.plain) is tuple and len(case.preact) == 2
    assert type(case.preact[0]) is list and len(case.preact[0]) == len(ref["feat_shapes_preact"])


def test_bn_before_relu(case: Case) -> None:
    expected = case.recorded["bn_before_relu"]
    if not expected["supported"]:
        with pytest.raises(NotImplementedError) as error:
            case.model.get_bn_before_relu()
        assert f"NotImplementedError: {error.value}" == expected["error"]
        return
    bns = case.model.get_bn_before_relu()
    names = module_names(case.model)
    assert [bn.num_features for bn in bns] == expected["channels"]
    assert [list(bn.weight.shape) for bn in bns] == expected["weight_shapes"]
    assert [type(bn).__name__ for bn in bns] == expected["types"]
    assert [names[id(bn)] for bn in bns] == expected["module_names"]


def test_feat_modules(case: Case) -> None:
    expected = case.recorded["feat_modules"]
    modules = case.model.get_feat_modules()
    attribute_of = {id(module): name for name, module in case.model.named_children()}
    assert type(modules).__name__ == expected["container"]
    assert len(modules) == expected["count"]
    assert [type(m).__name__ for m in modules] == expected["types"]
    assert [attribute_of[id(m)] for m in modules] == expected["module_names"]
    assert sum(p.numel() for p in modules.parameters()) == expected["num_parameters"]


def test_initialisation_follows_repdistiller(case: Case) -> None:
    for module in case.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    # The largest conv gives the tightest estimate of the init's standard deviation.
    conv = max((m for m in case.model.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    weight = conv.weight.detach()
    receptive = weight[0, 0].numel()
    if case.name in DEFAULT_INIT_MODELS:
        expected_std = 1 / math.sqrt(3 * weight.shape[1] * receptive)  # kaiming_uniform_(a=sqrt(5)) on fan_in
    else:
        expected_std = math.sqrt(2 / (weight.shape[0] * receptive))  # He-normal on fan_out
    assert weight.std().item() == pytest.approx(expected_std, rel=0.05)


@pytest.mark.parametrize("name", [name for name in MODELS.names() if name.startswith("wrn_")])
def test_wrn_train_mode_preact_updates_the_next_bn_again(name: str) -> None:
    # models.json notes: wrn preact features come from the next BN, whose running stats then update once more.
    model = create_model(name).train()
    x = torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(0))
    model(x, is_feat=True, preact=True)
    twice = {id(bn) for bn in model.get_bn_before_relu()}
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.num_batches_tracked.item() == (2 if id(module) in twice else 1)
