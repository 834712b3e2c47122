"""timm and torchvision models behind the zoo's feature interface (DESIGN.md "Model").

``ExternalModel`` wraps a network built by its own library and offers what the methods read from zoo models:
``model(x)`` (logits), ``model(x, is_feat=True, preact=...)`` (``[stem, stages..., embedding], logits``) and the
declared ``feature_info``. Everything is derived from the library's own API, never from hand-typed tables:

- timm: ``forward_intermediates`` (NCHW stage outputs; ViT token maps reshaped to NCHW with the prefix tokens
  dropped, which is timm's default) and ``feature_info`` (channels, reduction); the embedding is
  ``forward_head(pre_logits=True)``.
- torchvision: ``create_feature_extractor`` (FX) with default return nodes per model: the last node of each
  resolution among the model's top-level blocks (``features.N`` blocks for MobileNets, EfficientNets, ConvNeXts,
  VGGs), the input of the final ``Linear`` as the embedding and the model's output as the logits. Channels and
  reductions come from one probe forward at construction.

What an external model cannot give is declared, so a method that needs it refuses the pair before training:
pre-activation stage outputs (AB, OFD, ReviewKD's teacher side) are read only where the family's blocks are known
(timm ResNets: the input of the ReLU after each stage's last residual sum, with the BN before it for OFD's
margins); elsewhere ``preact_available`` is False and ``get_bn_before_relu`` raises ``NotImplementedError``.
The state dict is the wrapped network's own (no ``net.`` prefix), so plain timm/torchvision state dicts load
and our checkpoints of external models load back into the library's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.errors import UserError
from distillers.models.base import FeatureInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the libraries' default normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_FEATURE_MAPS = 5  # stem + 4 stages, the zoo's longest list; deeper models (ViT blocks) are sampled evenly

def evenly_spaced(count: int, keep: int = MAX_FEATURE_MAPS) -> list[int]:
    """``keep`` indices out of ``range(count)``, evenly spread, first and last included (all when fewer)."""
    if count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


class ExternalModel(nn.Module):
    """A timm/torchvision network with the seed's feature list, declared metadata and its own state-dict keys.

    ``nodes`` are timm ``forward_intermediates`` indices (``kind="timm"``) or torchvision FX node names
    (``kind="torchvision"``; the FX graph module is built on first use and never copied or saved).
    """

    def __init__(self, net: nn.Module, name: str, kind: str, nodes: list, feature_info: list[FeatureInfo],
                 classifier_name: str, embedding_node: str | None, mean: tuple[float, ...], std: tuple[float, ...],
                 input_size: int | None, preact_points: list[str | None] | None = None,
                 bn_points: list[str] | None = None) -> None:
        super().__init__()
        # Module paths of the activation after each stage's residual sum (its input is the pre-activation; None for
        # the stem) and of the BN before it; only where the family's blocks are known (timm ResNets).
        self.preact_points, self.bn_points = list(preact_points or []), list(bn_points or [])
        self.preact_available = bool(self.preact_points) and all(p is not None for p in self.preact_points[1:])
        self.net = net
        self.name, self.kind, self.nodes = name, kind, list(nodes)
        self.feature_info = feature_info
        self.classifier_name, self.embedding_node = classifier_name, embedding_node
        self.mean, self.std, self.input_size = tuple(mean), tuple(std), input_size
        self.trained_here = False  # weights from one of our checkpoints (they saw the data's own normalisation)
        self._fx: nn.Module | None = None
        self.register_state_dict_post_hook(_drop_prefix_of("net."))
        self.register_load_state_dict_pre_hook(_add_prefix_of("net."))

    def __getstate__(self) -> dict[str, Any]:  # copies and pickles rebuild the FX graph on their own network
        return {**self.__dict__, "_fx": None}

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        if not is_feat:
            return self.net(x)
        if preact and not self.preact_available:
            raise UserError(f"{self.name} gives no pre-activation features (its library exposes stage outputs after "
                            f"the activation only); pick a method that reads post-activation features")
        if preact:
            maps, embedding, logits = self._preact_features(x)
        else:
            maps, embedding, logits = self._timm_features(x) if self.kind == "timm" else self._fx_features(x)
        return [*maps, embedding], logits

    def _preact_features(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Stage outputs before their final activation, read by forward pre-hooks on that activation (cloned: the
        ReLU may work in place); the stem stays post-activation, as in the zoo's ResNets."""
        captured: dict[int, Tensor] = {}
        handles = [self.net.get_submodule(path).register_forward_pre_hook(
            lambda module, args, position=position: captured.__setitem__(position, args[0].clone()))
            for position, path in enumerate(self.preact_points) if path is not None]
        try:
            maps, embedding, logits = self._timm_features(x)
        finally:
            for handle in handles:
                handle.remove()
        return [captured.get(i, feature) for i, feature in enumerate(maps)], embedding, logits

    def _timm_features(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        final, maps = self.net.forward_intermediates(x, indices=self.nodes, output_fmt="NCHW")
        return list(maps), self.net.forward_head(final, pre_logits=True), self.net.forward_head(final)

    def _fx_features(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        if self._fx is None:
            from torchvision.models.feature_extraction import create_feature_extractor

            nodes = {node: node for node in self.nodes}
            nodes.update({self.embedding_node: "embedding", self.classifier_name: "logits"})
            # Not a registered submodule: it shares the network's modules and must not enter the state dict.
            object.__setattr__(self, "_fx", create_feature_extractor(self.net, return_nodes=nodes))
        if self._fx.training != self.net.training:
            self._fx.train(self.net.training)
        out = self._fx(x)
        return [out[node] for node in self.nodes], out["embedding"].flatten(1), out["logits"]

    def classifier(self) -> nn.Module:
        """The final classification layer (replaced by ``--reset-head``)."""
        return self.net.get_submodule(self.classifier_name)

    def classifier_keys(self) -> list[str]:
        """State-dict keys of the classifier, as they appear in the network's own state dict."""
        return [f"{self.classifier_name}.{key}" for key in self.classifier().state_dict()]

    def get_feat_modules(self) -> nn.ModuleList:
        """Every top-level block but the one holding the classifier (what the init stages of AB/FT/FSP train)."""
        head_root = self.classifier_name.split(".")[0]
        return nn.ModuleList([module for name, module in self.net.named_children() if name != head_root])

    def get_bn_before_relu(self) -> list[nn.Module]:
        if not self.bn_points:
            raise NotImplementedError(f"{self.name} declares no BN-before-ReLU layers")
        return [self.net.get_submodule(path) for path in self.bn_points]


def wrap_timm(net: nn.Module, name: str, input_size: int | None) -> ExternalModel:
    """Wrap a timm model: stage outputs from ``forward_intermediates``, metadata from ``feature_info``."""
    if not hasattr(net, "forward_intermediates") or not getattr(net, "feature_info", None):
        raise UserError(f"{name} does not offer timm's forward_intermediates/feature_info, which feature methods "
                        f"need; pick another timm model (most families since timm 1.0 have them)")
    infos = list(net.feature_info)
    indices = evenly_spaced(len(infos))
    maps_info = [FeatureInfo(int(infos[i]["num_chs"]), int(infos[i]["reduction"])) for i in indices]
    embedding_dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
    classifier = net.get_classifier()
    classifier_name = next(n for n, module in net.named_modules() if module is classifier)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
    return ExternalModel(net, name, "timm", indices, [*maps_info, FeatureInfo(embedding_dim, None)],
                         classifier_name, None, mean, std, input_size, *_timm_resnet_preact(net, infos, indices))


def _timm_resnet_preact(net: nn.Module, infos: list, indices: list[int]) -> tuple[list[str | None], list[str]]:
    """For timm ResNets (BasicBlock: ``bn2``, sum, ``act2``; Bottleneck: ``bn3``, sum, ``act3``): the ReLU after
    each stage's last residual sum and the BN before it. Other families declare none."""
    if type(net).__name__ != "ResNet":
        return [], []
    points: list[str | None] = []
    bns: list[str] = []
    for i in indices:
        path = infos[i]["module"]
        stage = net.get_submodule(path)
        last = stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else None
        act, bn = ("act3", "bn3") if hasattr(last, "act3") else ("act2", "bn2")
        if last is None or not isinstance(getattr(last, act, None), nn.ReLU):
            points.append(None)
            continue
        points.append(f"{path}.{len(stage) - 1}.{act}")
        bns.append(f"{path}.{len(stage) - 1}.{bn}")
    return points, bns


def _last_linear(net: nn.Module, name: str) -> tuple[str, nn.Linear]:
    linears = [(path, module) for path, module in net.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError(f"{name} has no final nn.Linear classifier, so its embedding cannot be found")
    return linears[-1]


def _candidate_nodes(net: nn.Module, classifier_name: str) -> list[str]:
    """Top-level blocks in order (``features``/``trunk_output`` expanded), up to the pooling and the classifier."""
    head_root = classifier_name.split(".")[0]
    names: list[str] = []
    for path, child in net.named_children():
        if path == head_root or isinstance(child, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)):
            continue
        if isinstance(child, nn.Sequential) and path in ("features", "trunk_output"):
            names += [f"{path}.{inner}" for inner, _ in child.named_children()]
        else:
            names.append(path)
    return names


def _embedding_node(net: nn.Module, classifier_name: str) -> str:
    """The FX node feeding the final Linear, skipping dropouts (the pooled embedding, timm's ``pre_logits``)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    order = get_graph_node_names(net)[1]
    position = order.index(classifier_name) - 1
    while position > 0 and ("dropout" in order[position].lower() or _is_dropout(net, order[position])):
        position -= 1
    return order[position]


def _is_dropout(net: nn.Module, node: str) -> bool:
    try:
        return isinstance(net.get_submodule(node), nn.Dropout)
    except AttributeError:
        return False


def wrap_torchvision(net: nn.Module, name: str, input_size: int) -> ExternalModel:
    """Wrap a torchvision CNN through FX feature extraction: the last node of each resolution among its top-level
    blocks; channels and reductions from one probe forward at ``input_size``."""
    from torchvision.models.feature_extraction import create_feature_extractor

    if any(kind in type(net).__name__ for kind in ("VisionTransformer", "Swin", "MaxVit")):
        raise UserError(f"{name} is a transformer whose torchvision features are not NCHW maps; use its timm "
                        f"version (e.g. timm:vit_tiny_patch16_224), whose token maps are reshaped for you")
    classifier_name, classifier = _last_linear(net, name)
    candidates = _candidate_nodes(net, classifier_name)
    probe = create_feature_extractor(net, return_nodes={node: node for node in candidates})
    training = net.training
    net.eval()
    with torch.no_grad():
        shapes = {node: tuple(out.shape) for node, out in probe(torch.zeros(1, 3, input_size, input_size)).items()}
    net.train(training)
    maps = [node for node in candidates if len(shapes[node]) == 4]
    stage_ends = [node for i, node in enumerate(maps)
                  if i + 1 == len(maps) or shapes[maps[i + 1]][-1] != shapes[node][-1]]
    chosen = [stage_ends[i] for i in evenly_spaced(len(stage_ends))]
    infos = [FeatureInfo(shapes[node][1], max(1, input_size // shapes[node][-1])) for node in chosen]
    infos.append(FeatureInfo(classifier.in_features, None))
    return ExternalModel(net, name, "torchvision", chosen, infos, classifier_name,
                         _embedding_node(net, classifier_name), IMAGENET_MEAN, IMAGENET_STD, input_size)


@dataclass(frozen=True)
class SizedFeatureInfo(FeatureInfo):
    """A feature entry of a model that always sees ``model_size`` pixels (its input is resized to that)."""

    model_size: int = 0

    def shape(self, input_size: int) -> tuple[int, ...]:
        return super().shape(self.model_size)


class Preprocessed(nn.Module):
    """A model fed its own normalisation (and size) of the batch normalised for the data: ``x`` is mapped back to
    pixels with the data's statistics, then normalised with the model's and resized (bilinear, antialiased) when
    ``size`` differs from the batch's, as timm's ``DistillationTeacher.normalize_input`` does for a teacher. The
    state dict is the inner model's; ``feature_info`` follows the size it sees."""

    def __init__(self, model: nn.Module, data_mean: tuple[float, ...], data_std: tuple[float, ...],
                 size: int | None = None) -> None:
        super().__init__()
        self.model, self.size = model, size
        data_mean_t, data_std_t = torch.tensor(data_mean).view(1, -1, 1, 1), torch.tensor(data_std).view(1, -1, 1, 1)
        mean, std = torch.tensor(model.mean).view(1, -1, 1, 1), torch.tensor(model.std).view(1, -1, 1, 1)
        # x_model = (x * data_std + data_mean - mean) / std = x * scale + shift
        self.register_buffer("scale", data_std_t / std, persistent=False)
        self.register_buffer("shift", (data_mean_t - mean) / std, persistent=False)
        infos = model.feature_info
        self.feature_info = infos if size is None else [SizedFeatureInfo(i.channels, i.reduction, size) for i in infos]
        self.name = getattr(model, "name", type(model).__name__)
        self.preact_available = getattr(model, "preact_available", True)
        self.register_state_dict_post_hook(_drop_prefix_of("model."))
        self.register_load_state_dict_pre_hook(_add_prefix_of("model."))

    def adapt(self, x: Tensor) -> Tensor:
        x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Any:
        return self.model(self.adapt(x), is_feat=is_feat, preact=preact)

    def get_feat_modules(self) -> nn.ModuleList:
        return self.model.get_feat_modules()

    def get_bn_before_relu(self) -> list[nn.Module]:
        return self.model.get_bn_before_relu()


def _drop_prefix_of(inner: str) -> Any:
    def hook(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state if k.startswith(prefix + inner)]:
            state[prefix + key[len(prefix + inner):]] = state.pop(key)
    return hook


def _add_prefix_of(inner: str) -> Any:
    def hook(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + inner)]:
            state[prefix + inner + key[len(prefix):]] = state.pop(key)
    return hook
