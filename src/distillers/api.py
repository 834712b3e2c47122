"""The library API for your own training loop (plain PyTorch, Lightning): ``distillers.Distiller``.

    distiller = Distiller(teacher, student, "crd", num_data=len(train_set))
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=0.05, momentum=0.9)
    loss, terms = distiller(images, labels, index=index, contrast_index=contrast_index)

``teacher`` and ``student`` are zoo models, ``create_model("timm:...")`` models, or plain timm/torchvision models
(wrapped here with the same feature interface, sharing their parameters). The objective is the CLI's:
``gamma * CE + alpha * KL_T + beta * method`` with the method's seed defaults for the weights you omit.

Temperature conventions, side by side with ``timm.task.distillation.LogitDistillationTask``: both multiply the
KL divergence by ``T^2`` (Hinton et al.) and average it over the batch (``kd_loss`` sums over classes and divides
by the batch size; timm uses ``reduction='batchmean'``), so ``Distiller(t, s, "kd", gamma=0, alpha=1, beta=0,
kd_T=T)`` returns timm's ``kd_loss`` at ``temperature=T``. timm's default temperature is 1, ours (the seed's) 4.
``PooledFeatureMSE`` is timm's ``FeatureDistillationTask`` loss as a method: MSE between a linear projection of the
student's pooled embedding and the teacher's (timm's ``forward_head(pre_logits=True)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Method, Pair, Step, Weights
from distillers.models.external import ExternalModel, wrap_timm, wrap_torchvision
from distillers.models.sources import check_method, own_preprocessing
from distillers.objective import Distillation, InitStage, TeacherEnsemble

_OPTION_FIELDS = {f.name for f in dataclasses.fields(MethodOptions)} - {"extra"}


class PooledFeatureMSE(Method):
    """timm's ``FeatureDistillationTask`` loss: ``MSE(Linear(embedding_s), embedding_t)``, averaged over elements;
    the projection exists only when the two embedding sizes differ (as in timm)."""

    name = "pooled_mse"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)

    def __init__(self, s_dim: int, t_dim: int) -> None:
        super().__init__()
        self.projection = nn.Linear(s_dim, t_dim) if s_dim != t_dim else None

    @classmethod
    def build(cls, pair: Pair) -> PooledFeatureMSE:
        return cls(pair.student_shapes[-1][0], pair.teacher_shapes[-1][0])

    def forward(self, step: Step) -> Tensor:
        feat_s = step.feats_s[-1] if self.projection is None else self.projection(step.feats_s[-1])
        return F.mse_loss(feat_s, step.feats_t[-1])


def as_distillable(model: nn.Module, input_size: int) -> nn.Module:
    """A model with the feature interface: zoo and wrapped models as they are, plain timm/torchvision models wrapped
    (sharing their parameters)."""
    if isinstance(getattr(model, "feature_info", None), list) and model.feature_info and \
            hasattr(model.feature_info[0], "reduction") and not isinstance(model.feature_info[0], dict):
        return model
    name = type(model).__name__
    if hasattr(model, "forward_intermediates") and hasattr(model, "pretrained_cfg"):
        return wrap_timm(model, f"timm:{name}", input_size)
    if type(model).__module__.startswith("torchvision."):
        return wrap_torchvision(model, f"torchvision:{name}", input_size)
    raise UserError(f"{name} has no feature interface: use a zoo model, a timm or torchvision model, or give it "
                    f"feature_info and forward(x, is_feat=True) (docs/adding-a-model.md)")


def _num_classes(model: nn.Module) -> int:
    if isinstance(model, ExternalModel):
        return model.classifier().out_features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"cannot tell the number of classes of {type(model).__name__}; pass num_classes=")
    return linears[-1].out_features


class Distiller(nn.Module):
    """``gamma * CE + alpha * KL_T + beta * method`` as a module: ``distiller(images, labels)`` -> ``(loss, terms)``.

    ``method`` is a registered name (``distillers list methods``) or a ``Method`` subclass. ``options`` are the
    shared hyper-parameters (``feat_dim``, ``nce_k``, ``hint_layer``, ...) and the method's own ``--method-opt``
    keys. ``num_data`` (the training-set size) is needed by CRD's memory bank. The teacher is frozen. With
    ``data_mean``/``data_std`` (the normalisation of your batches) a timm/torchvision teacher sees its own
    normalisation of them, resized to ``teacher_input_size`` when given.
    """

    def __init__(self, teacher: nn.Module | list[nn.Module], student: nn.Module, method: str | type[Method], *,
                 gamma: float | None = None, alpha: float | None = None, beta: float | None = None,
                 kd_T: float | None = None, num_data: int | None = None, num_classes: int | None = None,
                 input_size: int = 32, data_mean: tuple[float, ...] | None = None,
                 data_std: tuple[float, ...] | None = None, teacher_input_size: int | None = None,
                 teacher_weights: list[float] | None = None, **options: Any) -> None:
        super().__init__()
        method_cls = METHODS.get(method) if isinstance(method, str) else method
        student = as_distillable(student, input_size)
        teacher = self._teachers(teacher, method_cls, input_size, data_mean, data_std, teacher_input_size,
                                 teacher_weights)
        shared = {key: options.pop(key) for key in list(options) if key in _OPTION_FIELDS}
        opts = MethodOptions(**shared, kd_T=MethodOptions.kd_T if kd_T is None else kd_T)
        opts.extra = method_cls.resolve_options(options)
        needs_index, _ = method_cls.data_needs(opts)
        if needs_index and num_data is None:
            raise UserError(f"method {method_cls.name!r} keeps one entry per training image: pass num_data= (the "
                            f"training-set size) and index= with every batch")
        names = (getattr(teacher, "name", type(teacher).__name__), getattr(student, "name", type(student).__name__))
        check_method(method_cls, teacher, student, *names)
        pair = Pair(student=student, teacher=teacher, student_name=names[1], teacher_name=names[0],
                    num_classes=num_classes or _num_classes(student), num_data=num_data or 0,
                    input_size=input_size, options=opts)
        default = method_cls.weights
        self.weights = Weights(default.gamma if gamma is None else gamma, default.alpha if alpha is None else alpha,
                               default.beta if beta is None else beta)
        self.objective = Distillation(student, teacher, method_cls.build(pair), self.weights, opts.kd_T)

    @staticmethod
    def _teachers(teacher: nn.Module | list[nn.Module], method_cls: type[Method], input_size: int,
                  data_mean: Any, data_std: Any, size: int | None, weights: list[float] | None) -> nn.Module:
        """One teacher, or a list of them for the logit methods (logits averaged, or weighted by ``weights``);
        each sees its own normalisation of the batch when the batch's is given."""
        several = isinstance(teacher, (list, tuple))
        teachers = [as_distillable(t, input_size) for t in (teacher if several else [teacher])]
        if data_mean is not None and data_std is not None:
            teachers = [own_preprocessing(t, tuple(data_mean), tuple(data_std), size) for t in teachers]
        if not several:
            return teachers[0]
        if method_cls.teacher_features:
            raise UserError(f"method {method_cls.name!r} reads the teacher's features, so it takes one teacher; "
                            f"several teachers work with the methods that read logits only (kd, dkd, dist, ...)")
        if weights is not None and len(weights) != len(teachers):
            raise UserError(f"teacher_weights has {len(weights)} entries for {len(teachers)} teachers")
        return TeacherEnsemble(teachers, [getattr(t, "name", type(t).__name__) for t in teachers], weights)

    @property
    def method(self) -> Method:
        return self.objective.method

    @property
    def student(self) -> nn.Module:
        return self.objective.student

    @property
    def teacher(self) -> nn.Module:
        """Frozen, and in eval mode whatever ``train()`` says (but for OFD, as in the CLI)."""
        return self.objective.teacher

    def forward(self, images: Tensor, labels: Tensor, index: Tensor | None = None,
                contrast_index: Tensor | None = None, **extra: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss and its named terms (``ce``, ``kl``, the method's); ``extra`` reaches the method
        (``image_strong`` for MLKD's second view). The student's logits of this call are ``self.logits``."""
        batch = {"image": images, "target": labels, **extra}
        if index is not None:
            batch["index"] = index
        if contrast_index is not None:
            batch["contrast_index"] = contrast_index
        self.logits, terms = self.objective(batch)
        return sum(terms.values()), terms

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """What the optimiser must update: the student's parameters and the method's own modules'."""
        return [*self.student.parameters(), *self.method.main_parameters()]

    def init_stage(self) -> InitStage:
        """AB/FT/FSP's initialisation stage as a module (``init(batch) -> (logits, {"init": loss})``; optimise
        ``init.trained.parameters()``); call ``self.method.end_init_stage()`` after it."""
        if not self.method.init_stage:
            raise UserError(f"method {self.method.name!r} has no initialisation stage")
        return InitStage(self.objective)
