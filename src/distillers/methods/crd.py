"""CRD: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020, arXiv 1910.10699.

Student and teacher embeddings are contrasted against a memory bank of the other network's past embeddings with
an NCE objective; K negatives per sample come from the data loader (``distillers.data.sampling``). Our extension,
``--method-opt crd_memory=queue``, replaces the bank with two fixed-size FIFO queues (``docs/crd_memory.md``).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.engine.distributed import all_gather, all_mean, world_size
from distillers.errors import UserError
from distillers.methods import METHODS, Option
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import LinearEmbed, flat_dim

_NCE_EPS = 1e-7
MEMORY_MODES = ("bank", "queue")  # --method-opt crd_memory=...; bank is the published CRD
MEMORY_OPTION = Option("crd_memory", str, "bank", "where the negatives come from: bank (one row per training image, "
                       "the published CRD) or queue (FIFO of the last nce_k embeddings, our extension)",
                       "CRD paper and RepDistiller (bank); queue: docs/crd_memory.md", choices=MEMORY_MODES)


def _l2_normalize(x: Tensor) -> Tensor:
    """``x / ||x||`` along dim 1 without an eps, as RepDistiller's ``Normalize``."""
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


def _uniform_rows(rows: int, feat_dim: int) -> Tensor:
    """RepDistiller's memory init: uniform in ``[-a, a]``, ``a = 1/sqrt(feat_dim/3)`` (rows of unit norm on average)."""
    bound = 1.0 / math.sqrt(feat_dim / 3)
    return torch.rand(rows, feat_dim).mul_(2 * bound).add_(-bound)


def nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """NCE loss of ``scores`` (B x (K+1), column 0 the positive) with uniform noise ``1 / n_data``."""
    batch, m = scores.shape[0], scores.shape[1] - 1
    noise = m / n_data
    log_d1 = torch.log(scores[:, 0] / (scores[:, 0] + noise + _NCE_EPS))
    log_d0 = torch.log(noise / (scores[:, 1:] + noise + _NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / batch


class ContrastMemory(nn.Module):
    """Memory bank of student (``memory_v1``) and teacher (``memory_v2``) embeddings, with its constants.

    Everything is a buffer, so the bank and the normalisers travel with the state_dict (resume). ``params`` holds
    ``[K, T, Z_s, Z_t, momentum]``, ``Z < 0`` meaning not yet estimated; like the reference's buffer it has the
    module's dtype (float32 in training, so T = 0.07 is float32-rounded there: kept).

    The interface CRD uses (shared with ``ContrastQueue``): the constructor, ``noise_size``, ``nce_k_problem``,
    ``check_inputs``, ``check_batch_size`` and ``forward(v_s, v_t, index, contrast_index)``.
    """

    def __init__(self, feat_dim: int, n_data: int, nce_k: int, nce_t: float, nce_m: float) -> None:
        super().__init__()
        self.n_data = n_data
        self.nce_k = nce_k
        self.register_buffer("params", torch.tensor([nce_k, nce_t, -1.0, -1.0, nce_m]))
        self.register_buffer("memory_v1", _uniform_rows(n_data, feat_dim))
        self.register_buffer("memory_v2", _uniform_rows(n_data, feat_dim))

    @property
    def noise_size(self) -> int:
        """Size of the population the NCE noise is uniform over: the training set."""
        return self.n_data

    @staticmethod
    def nce_k_problem(nce_k: int, num_data: int, num_classes: int) -> str | None:
        """Why ``nce_k`` negatives per sample cannot be drawn from this training set (None when they can)."""
        # Negatives are drawn from the other classes (balanced classes assumed, as CIFAR/Tiny-ImageNet).
        available = num_data - math.ceil(num_data / num_classes)
        if 0 < nce_k <= available:
            return None
        return (f"--nce_k {nce_k} needs 1..{available} negatives per sample (a {num_data}-sample training set); "
                f"lower --nce_k")

    def check_inputs(self, index: Tensor | None, contrast_index: Tensor | None) -> None:
        """The bank scores the loader's contrast rows and writes the batch's own rows: both must be there."""
        if index is None or contrast_index is None:
            raise ValueError("CRD needs step.index and step.contrast_index (the loader's CRD sampling)")
        if contrast_index.shape[1] != self.nce_k + 1:
            raise ValueError(f"contrast_index has {contrast_index.shape[1]} columns, CRD expects nce_k + 1 = "
                             f"{self.nce_k + 1}")

    def check_batch_size(self, batch_size: int) -> None:
        """The bank takes any batch size."""

    def forward(self, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_index: Tensor) -> tuple[Tensor, Tensor]:
        """Scores ``P_s, P_t`` (B x (K+1)) of both embeddings against the other side's memory, then update it."""
        # Copies: autograd keeps the temperature, and the buffer is written below.
        temperature, momentum = self.params[1].clone(), self.params[4].clone()
        batch, k1 = contrast_index.shape
        rows = contrast_index.reshape(-1)
        # Memory rows are constants for autograd (index_select copies them, so the update below is safe).
        weight_v2 = self.memory_v2.index_select(0, rows).view(batch, k1, -1)
        weight_v1 = self.memory_v1.index_select(0, rows).view(batch, k1, -1)
        out_s = torch.exp(torch.bmm(weight_v2, v_s.unsqueeze(2)).squeeze(2) / temperature)
        out_t = torch.exp(torch.bmm(weight_v1, v_t.unsqueeze(2)).squeeze(2) / temperature)
        with torch.no_grad():
            # Z is estimated on the first (global) batch and frozen; torch.where keeps it on the device (no sync).
            z_s = torch.where(self.params[2] < 0, all_mean(out_s.mean()) * self.n_data, self.params[2])
            z_t = torch.where(self.params[3] < 0, all_mean(out_t.mean()) * self.n_data, self.params[3])
            self.params[2:4] = torch.stack([z_s, z_t])
            # Under DDP every rank writes every rank's samples, so all ranks keep identical banks.
            index, v_s, v_t = all_gather(index), all_gather(v_s.detach()), all_gather(v_t.detach())
            self._update(self.memory_v1, index, v_s, momentum)
            self._update(self.memory_v2, index, v_t, momentum)
        return out_s / z_s, out_t / z_t

    @staticmethod
    def _update(memory: Tensor, index: Tensor, v: Tensor, momentum: Tensor) -> None:
        """``memory[index] = normalize(momentum * memory[index] + (1 - momentum) * v)`` in place."""
        rows = memory.index_select(0, index) * momentum + v.detach().to(memory.dtype) * (1 - momentum)
        memory.index_copy_(0, index, rows / rows.pow(2).sum(1, keepdim=True).pow(0.5))


class ContrastQueue(nn.Module):
    """Our extension (not in the paper or RepDistiller): two FIFO queues of the last ``nce_k`` student
    (``queue_v1``) and teacher (``queue_v2``) embeddings replace the ``n_data``-row bank, so memory is O(nce_k).

    Every sample is contrasted with the whole queue (as MoCo); its positive is the other network's current
    embedding of the same sample, detached (the bank's positive is that sample's momentum-averaged memory row).
    The NCE noise is uniform over the queue (``Pn = 1/nce_k``) and ``Z = nce_k * mean(exp(s/T))`` is estimated on
    the first batch and frozen, as in the bank (the population size cancels in the NCE ratios up to the eps).
    ``params`` holds ``[K, T, Z_s, Z_t]``; one pointer serves both queues. All state is buffers (resume). Same
    interface as ``ContrastMemory``; the queue has no use for ``n_data`` (nothing grows with it) or ``nce_m``.
    """

    def __init__(self, feat_dim: int, n_data: int, nce_k: int, nce_t: float, nce_m: float) -> None:
        super().__init__()
        self.nce_k = nce_k
        self.register_buffer("params", torch.tensor([nce_k, nce_t, -1.0, -1.0]))
        # The bank's init, so that Z is estimated against negatives of the same scale as in bank mode.
        self.register_buffer("queue_v1", _uniform_rows(nce_k, feat_dim))
        self.register_buffer("queue_v2", _uniform_rows(nce_k, feat_dim))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def noise_size(self) -> int:
        """Size of the population the NCE noise is uniform over: the queue."""
        return self.nce_k

    @staticmethod
    def nce_k_problem(nce_k: int, num_data: int, num_classes: int) -> str | None:
        """A queue of any positive length works, whatever the training set."""
        return None if nce_k >= 1 else f"--nce_k {nce_k} must be a positive queue length"

    def check_inputs(self, index: Tensor | None, contrast_index: Tensor | None) -> None:
        """The queue needs neither sample indices nor contrast rows."""

    def check_batch_size(self, batch_size: int) -> None:
        """The queue length must be a multiple of the global batch (as RRD), so batches never split."""
        world = world_size()
        if batch_size < 1 or self.nce_k % (batch_size * world):
            size = f"the batch size ({batch_size})" if world == 1 else f"the global batch ({batch_size} x {world})"
            raise UserError(f"crd with crd_memory=queue needs --nce_k ({self.nce_k}) to be a multiple of {size}; "
                            f"change --nce_k or --batch_size")

    def forward(self, v_s: Tensor, v_t: Tensor, index: Tensor | None = None,
                contrast_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scores ``P_s, P_t`` (B x (1 + nce_k)) against the positive and the other side's queue, then enqueue."""
        temperature = self.params[1].clone()
        # Copies: autograd saves the negatives for the backward, and the buffers are overwritten below.
        negatives_t, negatives_s = self.queue_v2.clone(), self.queue_v1.clone()
        positive_s = (v_s * v_t.detach()).sum(1, keepdim=True)
        positive_t = (v_t * v_s.detach()).sum(1, keepdim=True)
        out_s = torch.exp(torch.cat([positive_s, v_s @ negatives_t.t()], dim=1) / temperature)
        out_t = torch.exp(torch.cat([positive_t, v_t @ negatives_s.t()], dim=1) / temperature)
        with torch.no_grad():
            z_s = torch.where(self.params[2] < 0, all_mean(out_s.mean()) * self.nce_k, self.params[2])
            z_t = torch.where(self.params[3] < 0, all_mean(out_t.mean()) * self.nce_k, self.params[3])
            self.params[2:4] = torch.stack([z_s, z_t])
            # Under DDP every rank enqueues every rank's samples, so all ranks keep identical queues.
            self._enqueue(all_gather(v_s.detach()), all_gather(v_t.detach()))
        return out_s / z_s, out_t / z_t

    def _enqueue(self, v_s: Tensor, v_t: Tensor) -> None:
        """Write the batch at the pointer (wrapping around the ring) and advance it, without a host sync."""
        batch = v_s.shape[0]
        if batch > self.nce_k:
            raise ValueError(f"a (global) batch of {batch} does not fit the CRD queue of {self.nce_k}")
        slots = (self.queue_ptr + torch.arange(batch, device=self.queue_ptr.device)) % self.nce_k
        self.queue_v1.index_copy_(0, slots, v_s.to(self.queue_v1.dtype))
        self.queue_v2.index_copy_(0, slots, v_t.to(self.queue_v2.dtype))
        self.queue_ptr.copy_((self.queue_ptr + batch) % self.nce_k)


@METHODS.register("crd")
class CRD(Method):
    """Contrastive representation distillation on the pooled embedding ``feats[-1]``.

    Kept reference quirks: the heads' L2 normalisation has no eps; the NCE normalisers Z are estimated from the
    first batch and then frozen (constants for autograd), stored in the ``params`` buffer with T and the momentum;
    the memory is updated in the same forward, after scoring. Deviations: the negatives always come from the
    loader (``step.contrast_index``; no in-module alias sampler); Z is set without a host sync (``torch.where`` on
    the device instead of ``.item()``: same value); the scores are computed in float32 even under autocast
    (``exp(s / 0.07)`` overflows float16). Extension: ``--method-opt crd_memory=queue`` builds ``CRDQueue``.
    The memory (``contrast``) does everything that differs between the bank and the queue, behind one interface.
    """

    name = "crd"
    display_name = "CRD"
    table_rank = 130
    paper = "Contrastive Representation Distillation (Tian et al., ICLR 2020, arXiv 1910.10699)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=0.8)
    weights_note = "seed run script: -a 0 -b 0.8 (CRD+KD: -a 1)"
    needs_index = True
    needs_contrast = True
    options = (MEMORY_OPTION,)
    memory: ClassVar[str] = "bank"  # the crd_memory option this class implements
    memory_class: ClassVar[type[ContrastMemory | ContrastQueue]] = ContrastMemory

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128, n_data: int = 50000, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_m: float = 0.5) -> None:
        super().__init__()
        self.embed_s = LinearEmbed(s_dim, feat_dim)
        self.embed_t = LinearEmbed(t_dim, feat_dim)
        self.contrast = self.memory_class(feat_dim, n_data, nce_k, nce_t, nce_m)

    @staticmethod
    def variant(options: MethodOptions) -> type[CRD]:
        """The class of the memory these options choose: ``CRD`` (bank) or ``CRDQueue``."""
        memory = CRD.resolve_options(options.extra)["crd_memory"]
        return next(cls for cls in (CRD, CRDQueue) if cls.memory == memory)

    @classmethod
    def data_needs(cls, options: MethodOptions) -> tuple[bool, bool]:
        """``(needs_index, needs_contrast)`` for these options: the queue mode needs neither (plain batches)."""
        variant = cls.variant(options)
        return variant.needs_index, variant.needs_contrast

    @classmethod
    def build(cls, pair: Pair) -> CRD:
        opts = pair.options
        variant = cls.variant(opts)
        if opts.mode not in ("exact", "relax"):
            raise UserError(f"unknown CRD sampling mode {opts.mode!r}; choose exact or relax")
        problem = variant.memory_class.nce_k_problem(opts.nce_k, pair.num_data, pair.num_classes)
        if problem:
            raise unsupported(cls.name, pair, problem)
        return variant(flat_dim(pair.student_shapes[-1]), flat_dim(pair.teacher_shapes[-1]), opts.feat_dim,
                       pair.num_data, opts.nce_k, opts.nce_t, opts.nce_m)

    def check_batch_size(self, batch_size: int) -> None:
        """The memory's constraint (the queue holds whole global batches; the bank has none)."""
        self.contrast.check_batch_size(batch_size)

    def loss(self, f_s: Tensor, f_t: Tensor, index: Tensor | None = None,
             contrast_index: Tensor | None = None) -> Tensor:
        """NCE loss of both sides for features ``f_s``, ``f_t``; the bank also needs sample ``index`` (B,) and
        ``contrast_index`` (B x (K+1)), the queue neither."""
        self.contrast.check_inputs(index, contrast_index)
        with torch.autocast(f_s.device.type, enabled=False):
            dtype = self.contrast.params.dtype
            v_s = _l2_normalize(self.embed_s(f_s.to(dtype)))
            v_t = _l2_normalize(self.embed_t(f_t.to(dtype)))
            out_s, out_t = self.contrast(v_s, v_t, index, contrast_index)
            noise_size = self.contrast.noise_size
            return nce_loss(out_s, noise_size) + nce_loss(out_t, noise_size)

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-1], step.feats_t[-1], step.index, step.contrast_index)


class CRDQueue(CRD):
    """CRD with ``--method-opt crd_memory=queue`` (our extension, ``ContrastQueue``): plain batches, memory
    O(nce_k). Built by ``CRD.build`` for that option, so it shares CRD's registry name and options."""

    needs_index = False
    needs_contrast = False
    # Recorded in config.json: reports keep these runs in their own row, never compared with published CRD.
    protocol = "crd-queue"
    memory = "queue"
    memory_class = ContrastQueue
