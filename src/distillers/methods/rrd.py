"""RRD: Giakoumoglou, Stathaki, "Relational Representation Distillation", 2024, arXiv 2407.12073.

The student's similarity distribution over a queue of past teacher embeddings must match the teacher's (a soft
cross-entropy with a sharper student temperature); the queue is a FIFO ring of teacher embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.engine.distributed import all_gather, world_size
from distillers.errors import UserError
from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import flat_dim


@METHODS.register("rrd")
class RRD(Method):
    """Relational representation distillation on the pooled embedding ``feats[-1]`` (seed ``distillers/RRD.py``).

    Kept reference quirks: the queue starts as ``randn`` normalised along dim 0 (unit columns, not rows); the
    teacher logits are detached, so ``embed_t`` never gets a gradient and stays at its random init although it is
    in the optimiser. Deviation: the reference asserts ``nce_k % B == 0`` at every step; we check the configured
    batch size once (``check_batch_size``) and let a shorter last batch wrap around the ring instead of failing;
    the loss is computed in the heads' dtype (float32) even under autocast.
    """

    name = "rrd"
    display_name = "RRD"
    table_rank = 150
    paper = "Relational Representation Distillation (Giakoumoglou & Stathaki, 2024, arXiv 2407.12073)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = "seed README's RRD commands: -a 0 -b 1 (RRD+KD: -a 1); not in the seed run script"

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128, nce_k: int = 16384, nce_t_s: float = 0.04,
                 nce_t_t: float = 0.1) -> None:
        super().__init__()
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        self.register_buffer("queue", F.normalize(torch.randn(nce_k, feat_dim), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.nce_t_s = nce_t_s
        self.nce_t_t = nce_t_t

    @classmethod
    def build(cls, pair: Pair) -> RRD:
        opts = pair.options
        if opts.nce_k < 1:
            raise unsupported(cls.name, pair, f"--nce_k {opts.nce_k} must be a positive queue length")
        return cls(flat_dim(pair.student_shapes[-1]), flat_dim(pair.teacher_shapes[-1]), opts.feat_dim, opts.nce_k,
                   opts.nce_t_s, opts.nce_t_t)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise a UserError unless the queue length is a multiple of the batch size (the reference's assertion)."""
        nce_k, world = self.queue.shape[0], world_size()
        if batch_size < 1 or nce_k % (batch_size * world):
            size = f"the batch size ({batch_size})" if world == 1 else f"the global batch ({batch_size} x {world})"
            raise UserError(f"rrd needs --nce_k ({nce_k}) to be a multiple of {size}; change --nce_k or --batch_size")

    def loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        """Soft cross-entropy between teacher and student similarities to the queue; then enqueue the teacher."""
        queue = self.queue.clone()  # the buffer is overwritten below, after autograd has saved this copy
        dtype = self.embed_s.weight.dtype
        # Full precision under autocast: similarities divided by 0.04 would amplify low-precision rounding.
        with torch.autocast(f_s.device.type, enabled=False):
            e_s = F.normalize(self.embed_s(f_s.flatten(1).to(dtype)))
            with torch.no_grad():
                e_t = F.normalize(self.embed_t(f_t.flatten(1).to(dtype)))
                target = F.softmax(e_t @ queue.t() / self.nce_t_t, dim=1)
            log_p = F.log_softmax(e_s @ queue.t() / self.nce_t_s, dim=1)
            loss = -(target * log_p).sum(1).mean()
        self._enqueue(all_gather(e_t))  # under DDP every rank enqueues every rank's keys: identical queues
        return loss

    @torch.no_grad()
    def _enqueue(self, e_t: Tensor) -> None:
        """Write the batch at the pointer (wrapping around the ring) and advance it, without a host sync."""
        nce_k, batch = self.queue.shape[0], e_t.shape[0]
        if batch > nce_k:
            raise ValueError(f"batch of {batch} does not fit the RRD queue of {nce_k}")
        slots = (self.queue_ptr + torch.arange(batch, device=self.queue.device)) % nce_k
        self.queue.index_copy_(0, slots, e_t.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + batch) % nce_k)

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-1], step.feats_t[-1])
