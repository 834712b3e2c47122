"""ImageNet models: the feature interface at 64x64 (and 224x224), and torchvision weight compatibility.

torchvision's models are built with ``weights=None`` (no download); their BN statistics are randomised before the
copy so that the eval-mode comparison exercises every tensor of the state dict.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from distillers.models import MODELS, create_model, feature_shapes
from distillers.models.imagenet_resnet import ImageNetResNet

# name -> (channels of each feature entry, reductions): facts of the published architectures.
ARCHITECTURES = {
    "resnet18_imagenet": ([64, 64, 128, 256, 512, 512], [4, 4, 8, 16, 32, None]),
    "resnet34_imagenet": ([64, 64, 128, 256, 512, 512], [4, 4, 8, 16, 32, None]),
    "resnet50_imagenet": ([64, 256, 512, 1024, 2048, 2048], [4, 4, 8, 16, 32, None]),
    "mobilenet_v1_imagenet": ([32, 128, 256, 512, 1024, 1024], [2, 4, 8, 16, 32, None]),
    "mobilenet_v2_imagenet": ([32, 24, 32, 96, 320, 1280], [2, 4, 8, 16, 32, None]),
}
TORCHVISION = {
    "resnet18_imagenet": torchvision.models.resnet18,
    "resnet34_imagenet": torchvision.models.resnet34,
    "resnet50_imagenet": torchvision.models.resnet50,
    "mobilenet_v2_imagenet": torchvision.models.mobilenet_v2,
}
# The torchvision modules whose outputs our features are (stem, then the four stages).
TORCHVISION_TAPS = {
    "resnet18_imagenet": ["maxpool", "layer1", "layer2", "layer3", "layer4"],
    "resnet34_imagenet": ["maxpool", "layer1", "layer2", "layer3", "layer4"],
    "resnet50_imagenet": ["maxpool", "layer1", "layer2", "layer3", "layer4"],
    "mobilenet_v2_imagenet": ["features.0", "features.3", "features.6", "features.13", "features.17"],
}
# MobileNetV1 1.0 (Howard et al. Table 1): 3x3 stem to 32 channels, then (out channels, stride) per dw-separable block.
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
    [(1024, 2), (1024, 1)]
PREACT_MODELS = {"resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet", "mobilenet_v1_imagenet"}


@dataclass
class Case:
    name: str
    model: nn.Module
    x: Tensor
    logits: Tensor
    feats: list[Tensor]
    feats_pre: list[Tensor]



@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def case(request: pytest.FixtureRequest) -> Case:
    torch.manual_seed(0)
    model = MODELS.get(request.param)().eval()  # the registered default: 1000 classes
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
        feats, logits_feat = model(x, is_feat=True)
        feats_pre, logits_pre = model(x, is_feat=True, preact=True)
    assert torch.equal(logits_feat, logits) and torch.equal(logits_pre, logits)
    return Case(request.param, model, x, logits, feats, feats_pre)


def randomise_buffers(model: nn.Module, seed: int) -> None:
    """Give every BN non-trivial running statistics (fresh ones make eval-mode BN nearly an identity)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))


def test_names_are_registered_apart_from_the_cifar_zoo() -> None:
    for name in ARCHITECTURES:
        assert name in MODELS and MODELS.canonical(name) == name
    assert MODELS.canonical("MobileNetV1") == "mobilenet_v1_imagenet"  # mdistiller's name
    assert MODELS.canonical("ResNet50") != "resnet50_imagenet"  # the CIFAR ResNet50 keeps its name


def test_logits_default_to_1000_classes_and_num_classes_is_honoured(case: Case) -> None:
    assert case.logits.shape == (2, 1000) and torch.isfinite(case.logits).all()
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        small = create_model(case.name, num_classes=5)
        assert small(torch.empty(2, 3, 64, 64)).shape == (2, 5)


def test_features_match_declared_info_at_64(case: Case) -> None:
    channels, reductions = ARCHITECTURES[case.name]
    assert [info.channels for info in case.model.feature_info] == channels
    assert [info.reduction for info in case.model.feature_info] == reductions
    assert [tuple(f.shape[1:]) for f in case.feats] == feature_shapes(case.model, 64)
    assert [tuple(f.shape[1:]) for f in case.feats_pre] == feature_shapes(case.model, 64)
    assert all(f.shape[0] == 2 for f in case.feats)
    # The embedding is what the classifier sees.
    head = case.model.fc if hasattr(case.model, "fc") else case.model.classifier
    with torch.no_grad():
        torch.testing.assert_close(head(case.feats[-1]), case.logits, rtol=0, atol=0)


def test_features_match_declared_info_at_224(case: Case) -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, _ = case.model(x, is_feat=True)
    assert [tuple(f.shape[1:]) for f in feats] == feature_shapes(case.model, 224)
    assert tuple(feats[-2].shape[-2:]) == (7, 7)


def test_preact_features_are_the_stage_outputs_before_relu(case: Case) -> None:
    plain, pre = case.feats, case.feats_pre
    differs = [not torch.equal(a, b) for a, b in zip(plain, pre)]
    if case.name in PREACT_MODELS:
        assert differs == [False, True, True, True, True, False]
        for a, b in zip(plain[1:-1], pre[1:-1]):
            assert (b < 0).any()
            torch.testing.assert_close(F.relu(b), a, rtol=0, atol=0)
    else:  # MobileNetV2's stage outputs are linear bottlenecks: nothing to take before a ReLU
        assert differs == [False] * len(plain)


def test_bn_before_relu_one_per_stage(case: Case) -> None:
    bns = case.model.get_bn_before_relu()
    modules = {id(m) for m in case.model.modules()}
    assert all(isinstance(bn, nn.BatchNorm2d) and id(bn) in modules for bn in bns)
    assert [bn.num_features for bn in bns] == [info.channels for info in case.model.feature_info[1:-1]]
    if case.name == "mobilenet_v1_imagenet":  # there the preact feature is exactly that BN's output
        captured = []
        handles = [bn.register_forward_hook(lambda _m, _i, out: captured.append(out)) for bn in bns]
        with torch.no_grad():
            feats_pre, _ = case.model(case.x, is_feat=True, preact=True)
        for handle in handles:
            handle.remove()
        for out, feat in zip(captured, feats_pre[1:-1], strict=True):
            torch.testing.assert_close(out, feat, rtol=0, atol=0)


def test_feat_modules_compute_the_last_stage(case: Case) -> None:
    modules = case.model.get_feat_modules()
    assert isinstance(modules, nn.ModuleList)
    with torch.no_grad():
        torch.testing.assert_close(nn.Sequential(*modules)(case.x), case.feats[-2], rtol=0, atol=0)
    head = sum(p.numel() for p in case.model.parameters()) - sum(p.numel() for p in modules.parameters())
    classifier = case.model.fc if hasattr(case.model, "fc") else case.model.classifier
    expected_head = sum(p.numel() for p in classifier.parameters())
    if case.name == "mobilenet_v2_imagenet":  # the final 1x1 conv to 1280 channels is not a feature module
        expected_head += sum(p.numel() for p in case.model.features[-1].parameters())
    assert head == expected_head


def test_train_step_backpropagates_through_preact_features(case: Case) -> None:
    model = copy.deepcopy(case.model).train()
    feats, logits = model(case.x, is_feat=True, preact=True)
    loss = F.cross_entropy(logits, torch.tensor([1, 3])) + sum(f.pow(2).mean() for f in feats)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_weights_load_strictly_with_identical_outputs(name: str) -> None:
    torch.manual_seed(0)
    reference = TORCHVISION[name](weights=None).eval()
    randomise_buffers(reference, seed=2)
    ours = create_model(name, num_classes=1000).eval()
    theirs = reference.state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.items()]
    ours.load_state_dict(theirs, strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())

    taps = dict(reference.named_modules())
    recorded: list[Tensor] = []
    for tap in TORCHVISION_TAPS[name]:
        taps[tap].register_forward_hook(lambda _m, _i, out: recorded.append(out))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(x)
        feats, logits = ours(x, is_feat=True)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert len(recorded) == len(feats) - 1
    for feat, tapped in zip(feats[:-1], recorded):
        torch.testing.assert_close(feat, tapped, rtol=0, atol=0)


def test_initialisation_follows_the_reference(case: Case) -> None:
    model = case.model
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    conv = max((m for m in model.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    weight = conv.weight.detach()
    if case.name == "mobilenet_v1_imagenet":  # mdistiller keeps PyTorch's default: kaiming_uniform_(a=sqrt(5))
        fan_in = weight[0].numel()
        assert weight.std().item() == pytest.approx((1 / (3 * fan_in)) ** 0.5, rel=0.05)
        return
    fan_out = weight.shape[0] * weight[0, 0].numel()
    assert weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)  # torchvision: He-normal, fan_out
    # The BN loop above also pins zero_init_residual=False (that option zeroes each block's last BN weight).
    if isinstance(model, ImageNetResNet):  # PyTorch's default Linear init: uniform(+-1/sqrt(fan_in)) bias
        bound = model.fc.in_features ** -0.5
        assert model.fc.bias.abs().max() <= bound and model.fc.bias.abs().max() > bound / 2
    else:
        linear = model.classifier[1]
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
        assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_mobilenet_v1_parameter_count_and_mdistiller_names() -> None:
    model = create_model("mobilenet_v1_imagenet", num_classes=1000)
    expected = 3 * 3 * 3 * 32 + 2 * 32  # stem conv and BN
    in_channels = 32
    for out_channels, _ in MOBILENET_V1_BLOCKS:  # depthwise 3x3 + BN, pointwise 1x1 + BN
        expected += 9 * in_channels + 2 * in_channels + in_channels * out_channels + 2 * out_channels
        in_channels = out_channels
    expected += 1024 * 1000 + 1000
    assert sum(p.numel() for p in model.parameters()) == expected
    assert round(expected / 1e6, 1) == 4.2  # the paper's Table 8: 4.2 million parameters

    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    names = ["model.0.0.weight"] + [f"model.0.1.{key}" for key in bn]
    for index in range(1, len(MOBILENET_V1_BLOCKS) + 1):
        names += [f"model.{index}.0.weight"] + [f"model.{index}.1.{key}" for key in bn]
        names += [f"model.{index}.3.weight"] + [f"model.{index}.4.{key}" for key in bn]
    names += ["fc.weight", "fc.bias"]
    assert list(model.state_dict()) == names
    strides = [m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert strides == [2] + [stride for _, stride in MOBILENET_V1_BLOCKS]
