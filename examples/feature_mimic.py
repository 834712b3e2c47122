"""Feature mimicking: a linear map of the student's embedding regresses the teacher's embedding (MSE).

The worked example of the docs' "Adding a method" page: a whole distillation method in one file. Nothing in the
package changes; load the file as a plugin:
``DISTILLERS_PLUGINS=examples/feature_mimic.py distillers distill ... --method feature_mimic``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS, Method, Option, Pair, Step, Weights
from distillers.methods.base import unsupported


@METHODS.register("feature_mimic", "mimic")
class FeatureMimic(Method):
    """Mean squared error between ``W @ student_embedding`` and ``teacher_embedding``.

    The embeddings are the last entry of both models' feature lists (``feats[-1]``, after global pooling). ``W``
    is this method's own module: the engine trains it with the student (``main_parameters``) and saves it in the
    checkpoint. Its size comes from the models' declared feature metadata, so no dry run is needed. With
    ``--method-opt normalize=true`` both sides are L2-normalised first, so only their directions are compared.
    """

    name = "feature_mimic"
    display_name = "FeatureMimic"  # its row in `distillers report` tables
    paper = "Example method of the docs (embedding regression, in the spirit of FitNets, arXiv 1412.6550)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)  # r, a, b when -r/-a/-b are not given
    weights_note = "example: no published setting"
    options = (Option("normalize", bool, False, "L2-normalise both embeddings before the MSE",
                      "this example (no published setting)"),)

    def __init__(self, student_dim: int, teacher_dim: int, normalize: bool = False) -> None:
        super().__init__()
        self.project = nn.Linear(student_dim, teacher_dim, bias=False)
        self.normalize = normalize

    @classmethod
    def build(cls, pair: Pair) -> FeatureMimic:
        """Size the projection from the declared embeddings; refuse a pair without them before training."""
        student, teacher = pair.student.feature_info[-1], pair.teacher.feature_info[-1]
        if student.reduction is not None or teacher.reduction is not None:
            raise unsupported(cls.name, pair, "the last feature of both models must be a pooled embedding")
        values = cls.resolve_options(pair.options.extra)  # typed; a bad key or value: one line
        return cls(student.channels, teacher.channels, normalize=values["normalize"])

    def loss(self, embedding_s: Tensor, embedding_t: Tensor) -> Tensor:
        """MSE between the projected student embedding and the teacher embedding, both (B, C)."""
        mapped = self.project(embedding_s)
        if self.normalize:
            mapped, embedding_t = F.normalize(mapped, dim=1), F.normalize(embedding_t, dim=1)
        return F.mse_loss(mapped, embedding_t)

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-1], step.feats_t[-1])
