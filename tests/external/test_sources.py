"""Model sources ``timm:`` and ``torchvision:``: features vs declared metadata, the libraries' own state-dict keys,
weights from files (state dict, safetensors, training checkpoints), head checks and one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from distillers.errors import UserError
from distillers.models import create_model, feature_shapes, sources

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["timm:mobilenetv3_small_050", "timm:vit_tiny_patch16_224,patch_size=4,depth=2",
                                  "torchvision:resnet18", "torchvision:mobilenet_v3_small"])
def test_features_match_declared_metadata(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 7).eval()
    feats, logits = model(X, is_feat=True)
    assert [tuple(f.shape[1:]) for f in feats] == feature_shapes(model, 32)
    assert torch.allclose(logits, model(X), atol=1e-5)  # the feature forward gives the plain forward's logits
    assert logits.shape == (2, 7) and len(feats) >= 3
    # The embedding is what the classifier reads: its own Linear applied to it gives the logits.
    assert torch.allclose(model.classifier()(feats[-1]), logits, atol=1e-5)


def test_vit_token_maps_drop_prefix_tokens() -> None:
    model = create_model("timm:vit_tiny_patch16_224,patch_size=4,depth=2", 3).eval()
    net = model.net
    tokens = net.norm_pre(net._pos_embed(net.patch_embed(X)))
    tokens = net.blocks[0](tokens)
    expected = tokens[:, net.num_prefix_tokens:].transpose(1, 2).reshape(2, 192, 8, 8)
    assert torch.allclose(model(X, is_feat=True)[0][0], expected, atol=1e-5)


def test_state_dict_is_the_librarys_and_loads_plain_files(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = timm.create_model("mobilenetv3_small_050", num_classes=3)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3},
               tmp_path / "timm_train.pth.tar")
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    for file in ("plain.pth", "timm_train.pth.tar", "w.safetensors"):
        model, name = sources.load_teacher(None, "timm:mobilenetv3_small_050", 3, tmp_path / file)
        assert name == "timm:mobilenetv3_small_050" and list(model.state_dict()) == list(net.state_dict())
        assert torch.equal(model.eval()(X), net.eval()(X))


def test_torchvision_weights_and_head_reset(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = torchvision.models.mobilenet_v3_small(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(UserError, match="10-class head but the data has 3 classes; a teacher"):
        sources.load_teacher(tmp_path / "tv.pth", "torchvision:mobilenet_v3_small", 3)
    with pytest.raises(UserError, match="pass --reset-head"):
        sources.create_student("torchvision:mobilenet_v3_small", 3, tmp_path / "tv.pth")
    student, _ = sources.create_student("torchvision:mobilenet_v3_small", 3, tmp_path / "tv.pth", reset_head=True)
    state = student.state_dict()
    assert torch.equal(state["features.0.0.weight"], net.state_dict()["features.0.0.weight"])
    assert state["classifier.3.weight"].shape == (3, 1024)
    student.eval()(X, is_feat=True)
    clone = copy.deepcopy(student)  # a copy extracts from its own network (the FX graph is rebuilt, not copied)
    with torch.no_grad():
        clone.classifier().weight.add_(1.0)
    assert not torch.equal(clone(X, is_feat=True)[1], student(X, is_feat=True)[1])
    assert torch.allclose(clone(X, is_feat=True)[1], clone(X), atol=1e-5)


def test_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    cases = [
        (lambda: sources.load_teacher(tmp_path / "evil.pth", "timm:resnet18", 3), "refusing to load"),
        (lambda: sources.load_teacher(None, "timm:resnet18", 3), "needs weights"),
        (lambda: create_model("timm:resnet_nope", 3), "unknown timm model 'resnet_nope'"),
        (lambda: create_model("torchvision:resnet_nope", 3), "unknown torchvision model"),
        (lambda: create_model("timm:resnet18,depth", 3), "bad model option"),
        (lambda: create_model("torchvision:vit_b_16", 3), "use its timm version"),
    ]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests
    cases.append((lambda: sources.load_teacher(None, "timm:resnet18.a1_in1k", 3, pretrained=True),
                  "pass the file with --teacher-weights"))
    for call, expected in cases:
        with pytest.raises(UserError) as error:
            call()
        assert expected in str(error.value) and "\n" not in str(error.value)


def test_foreign_teachers_get_their_own_normalisation(tmp_path: Path) -> None:
    """A plain timm file was trained on timm's normalisation (ViT: 0.5/0.5); our checkpoint on the data's."""
    from distillers.models.external import Preprocessed

    name = "timm:vit_tiny_patch16_224,patch_size=4,depth=1,img_size=32"
    vit, _ = sources.create(name, 3)
    torch.save(vit.state_dict(), tmp_path / "plain.pth")
    torch.save({"model": vit.state_dict(), "arch": name}, tmp_path / "ours.pt")
    data = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    foreign = sources.own_preprocessing(sources.load_teacher(tmp_path / "plain.pth", name, 3)[0], *data)
    ours = sources.own_preprocessing(sources.load_teacher(tmp_path / "ours.pt", name, 3)[0], *data)
    assert isinstance(foreign, Preprocessed) and not isinstance(ours, Preprocessed)
    assert torch.allclose(foreign.adapt(X), (X * torch.tensor(data[1]).view(1, 3, 1, 1)
                                             + torch.tensor(data[0]).view(1, 3, 1, 1) - 0.5) / 0.5, atol=1e-6)
    assert list(foreign.state_dict()) == list(vit.state_dict())


def test_timm_resnet_preactivations() -> None:
    """Pre-activations are the residual sums before the stage's last ReLU: ReLU of them gives the post-activation
    stage outputs, they hold negative values, and OFD's BN-before-ReLU layers are the blocks' last BNs."""
    torch.manual_seed(4)
    model = create_model("timm:resnet18", 3)
    for bn in model.get_bn_before_relu():
        torch.nn.init.normal_(bn.weight)  # timm zero-initialises them: the sums would equal the shortcuts
    model.eval()
    post, logits = model(X, is_feat=True)
    pre, logits_pre = model(X, is_feat=True, preact=True)
    assert torch.equal(logits, logits_pre) and torch.equal(pre[0], post[0]) and torch.equal(pre[-1], post[-1])
    for before, after in zip(pre[1:-1], post[1:-1]):
        assert (before < 0).any() and torch.equal(torch.relu(before), after)
    assert [bn.num_features for bn in model.get_bn_before_relu()] == [64, 128, 256, 512]
    with pytest.raises(NotImplementedError):
        create_model("timm:mobilenetv3_small_050", 3).get_bn_before_relu()
