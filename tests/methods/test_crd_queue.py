"""CRD's fixed-size queue mode (``--method-opt crd_memory=queue``, our extension) and its option parsing.

The bank mode's values are pinned by ``test_reference_parity.py -k crd``; here only its selection is checked.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Step
from distillers.methods import crd as crd_module
from distillers.methods.crd import CRD, ContrastMemory, ContrastQueue, CRDQueue
from distillers.models import create_model

S_DIM, T_DIM, FEAT_DIM = 5, 7, 4


def make_pair(num_data: int = 200, num_classes: int = 100, student: str = "resnet8", teacher: str = "resnet20",
              **options) -> Pair:
    return Pair(student=create_model(student, num_classes), teacher=create_model(teacher, num_classes),
                student_name=student, teacher_name=teacher, num_classes=num_classes, num_data=num_data,
                options=MethodOptions(**options))


def queue_crd(nce_k: int = 8, n_data: int = 200) -> CRD:
    return CRDQueue(S_DIM, T_DIM, feat_dim=FEAT_DIM, n_data=n_data, nce_k=nce_k)


def plain_step(batch: int, f_s: torch.Tensor | None = None, f_t: torch.Tensor | None = None) -> Step:
    """A step as a plain loader gives it: no sample index, no contrast index."""
    f_s = torch.randn(batch, S_DIM) if f_s is None else f_s
    f_t = torch.randn(batch, T_DIM) if f_t is None else f_t
    return Step(feats_s=[f_s], feats_t=[f_t], logits_s=torch.randn(batch, 10), logits_t=torch.randn(batch, 10),
                target=torch.zeros(batch, dtype=torch.long))


def embeddings(crd: CRD, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
    """The L2-normalised student and teacher embeddings of a step (what the queues store)."""
    with torch.no_grad():
        return F.normalize(crd.embed_s(step.feats_s[-1])), F.normalize(crd.embed_t(step.feats_t[-1]))


def state_bytes(module: torch.nn.Module) -> dict:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------- option parsing and data needs


def test_default_and_explicit_bank_are_the_published_crd():
    default = METHODS.get("crd").build(make_pair(nce_k=16, feat_dim=8))
    explicit = METHODS.get("crd").build(make_pair(nce_k=16, feat_dim=8, extra={"crd_memory": "bank"}))
    for method in (default, explicit):
        assert method.memory == "bank" and isinstance(method.contrast, ContrastMemory) and method.protocol == "crd"
        assert method.contrast.memory_v1.shape == (200, 8)
    assert default.state_dict().keys() == explicit.state_dict().keys()
    assert CRD.data_needs(MethodOptions()) == (True, True) == (CRD.needs_index, CRD.needs_contrast)
    assert CRD.data_needs(MethodOptions(extra={"crd_memory": "bank"})) == (True, True)


def test_queue_mode_needs_no_index_and_no_contrast_sampling():
    assert CRD.data_needs(MethodOptions(extra={"crd_memory": "queue"})) == (False, False)
    crd = METHODS.get("crd").build(make_pair(nce_k=16, feat_dim=8, extra={"crd_memory": "queue"}))
    assert crd.memory == "queue" and isinstance(crd.contrast, ContrastQueue)
    assert crd.protocol == "crd-queue" and CRD.protocol == "crd"  # reports never compare it with published CRD
    loss = crd(Step(feats_s=[torch.randn(4, 64)], feats_t=[torch.randn(4, 64)], logits_s=torch.randn(4, 100),
                    logits_t=torch.randn(4, 100), target=torch.zeros(4, dtype=torch.long)))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("value", ["ring", "Queue", 1])
def test_unknown_memory_mode_is_a_user_error(value):
    options = {"nce_k": 16, "feat_dim": 8, "extra": {"crd_memory": value}}
    with pytest.raises(UserError, match=rf"crd_memory={value}; choose bank .* or queue"):
        METHODS.get("crd").build(make_pair(**options))
    with pytest.raises(UserError, match=rf"crd_memory={value}"):
        CRD.data_needs(MethodOptions(**options))


def test_queue_mode_checks_the_queue_length_not_the_dataset():
    # The bank refuses more negatives than the other classes hold; a queue of any positive length is fine.
    with pytest.raises(UserError, match="--nce_k 199"):
        METHODS.get("crd").build(make_pair(nce_k=199, feat_dim=8))
    crd = METHODS.get("crd").build(make_pair(nce_k=512, feat_dim=8, extra={"crd_memory": "queue"}))
    assert crd.contrast.queue_v1.shape == (512, 8)
    with pytest.raises(UserError, match="--nce_k 0 must be a positive queue length"):
        METHODS.get("crd").build(make_pair(nce_k=0, feat_dim=8, extra={"crd_memory": "queue"}))


def test_check_batch_size_only_constrains_the_queue(monkeypatch):
    queue = queue_crd(nce_k=64)
    queue.check_batch_size(16)
    with pytest.raises(UserError, match=r"crd_memory=queue needs --nce_k \(64\).*batch size \(48\)"):
        queue.check_batch_size(48)
    CRD(S_DIM, T_DIM, feat_dim=FEAT_DIM, n_data=200, nce_k=64).check_batch_size(48)  # bank: any batch size
    # Under DDP the global batch must divide the queue: every rank enqueues every rank's samples.
    monkeypatch.setattr(crd_module, "world_size", lambda: 2)
    queue.check_batch_size(32)
    with pytest.raises(UserError, match=r"global batch \(24 x 2\)"):
        queue.check_batch_size(24)


# ---------------------------------------------------------------- the queue


def test_queue_memory_does_not_depend_on_the_dataset_size():
    nce_k, feat_dim = 32, 8
    shapes = {}
    for num_data in (200, 10**9):  # a bank of 10^9 rows could not even be allocated here
        crd = METHODS.get("crd").build(make_pair(num_data=num_data, nce_k=nce_k, feat_dim=feat_dim,
                                                 extra={"crd_memory": "queue"}))
        shapes[num_data] = {name: tuple(buffer.shape) for name, buffer in crd.named_buffers()}
    assert shapes[200] == shapes[10**9] == {"contrast.params": (4,), "contrast.queue_v1": (nce_k, feat_dim),
                                            "contrast.queue_v2": (nce_k, feat_dim), "contrast.queue_ptr": (1,)}
    queue_bytes = sum(b.numel() * b.element_size() for b in crd.buffers())
    assert queue_bytes == 2 * nce_k * feat_dim * 4 + 4 * 4 + 8
    bank = METHODS.get("crd").build(make_pair(num_data=200, nce_k=nce_k, feat_dim=feat_dim))
    assert bank.contrast.memory_v1.shape == (200, feat_dim)


def test_queue_loss_and_gradients_on_the_first_batch():
    """Scores against [the other side's current embedding (detached), the other side's whole queue], Z = nce_k *
    mean on this batch, uniform noise 1/nce_k; checked against this formula written out, values and gradients."""
    torch.manual_seed(0)
    nce_k, batch = 8, 4
    crd = queue_crd(nce_k)
    spec = copy.deepcopy(crd)  # the same heads and queues, before the step writes them
    step = plain_step(batch)
    temperature = spec.contrast.params[1]

    def side(v: torch.Tensor, positive: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        scores = torch.exp(torch.cat([(v * positive).sum(1, keepdim=True), v @ queue.t()], 1) / temperature)
        p = scores / (scores.detach().mean() * nce_k)
        # m * Pn = nce_k * (1 / nce_k) = 1
        return -(torch.log(p[:, 0] / (p[:, 0] + 1 + 1e-7)).sum() + torch.log(1 / (p[:, 1:] + 1 + 1e-7)).sum()) / batch

    v_s, v_t = F.normalize(spec.embed_s(step.feats_s[-1])), F.normalize(spec.embed_t(step.feats_t[-1]))
    expected = side(v_s, v_t.detach(), spec.contrast.queue_v2) + side(v_t, v_s.detach(), spec.contrast.queue_v1)
    loss = crd(step)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    for head in ("embed_s", "embed_t"):
        for name, param in getattr(crd, head).named_parameters():
            torch.testing.assert_close(param.grad, getattr(spec, head).get_parameter(name).grad, msg=head + name)
    z = crd.contrast.params[2:4].clone()
    assert (z > 0).all()
    crd(plain_step(batch))
    assert torch.equal(crd.contrast.params[2:4], z)  # estimated once, then frozen


def test_queue_mode_trains_heads_and_student_features():
    torch.manual_seed(0)
    crd = queue_crd(nce_k=8)
    f_s = torch.randn(4, S_DIM, requires_grad=True)
    loss = crd(plain_step(4, f_s=f_s))
    assert torch.isfinite(loss)
    loss.backward()
    for grad in (crd.embed_s.linear.weight.grad, crd.embed_t.linear.weight.grad, f_s.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_queue_mode_pulls_the_two_embeddings_of_a_sample_together():
    torch.manual_seed(0)
    crd = queue_crd(nce_k=8)
    f_s, f_t = torch.randn(16, S_DIM), torch.randn(16, T_DIM)
    optimizer = torch.optim.SGD(crd.parameters(), lr=0.1, momentum=0.9)

    def agreement() -> float:
        return F.cosine_similarity(*embeddings(crd, plain_step(16, f_s, f_t))).mean().item()

    before, losses = agreement(), []
    for _ in range(10):
        for start in range(0, 16, 4):
            loss = crd(plain_step(4, f_s[start:start + 4], f_t[start:start + 4]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-4:]) < 0.6 * sum(losses[:4])  # last epoch vs first
    assert agreement() > before + 0.5


def test_queue_holds_both_embeddings_and_the_pointer_wraps():
    torch.manual_seed(0)
    crd = queue_crd(nce_k=8)
    pointers = []
    for _ in range(3):
        step = plain_step(4)
        crd(step).backward()
        pointers.append(int(crd.contrast.queue_ptr))
    assert pointers == [4, 0, 4]
    # The third batch went to rows 0..3: the student's embeddings in queue_v1, the teacher's in queue_v2.
    v_s, v_t = embeddings(crd, step)
    torch.testing.assert_close(crd.contrast.queue_v1[:4], v_s)
    torch.testing.assert_close(crd.contrast.queue_v2[:4], v_t)
    torch.testing.assert_close(crd.contrast.queue_v1.norm(dim=1), torch.ones(8))


def test_short_batch_wraps_around_the_ring():
    crd = queue_crd(nce_k=8)
    crd.contrast.queue_ptr.fill_(6)
    before = crd.contrast.queue_v2.clone()
    step = plain_step(3)
    crd(step)
    _, v_t = embeddings(crd, step)
    torch.testing.assert_close(crd.contrast.queue_v2[[6, 7, 0]], v_t)
    assert torch.equal(crd.contrast.queue_v2[1:6], before[1:6])
    assert int(crd.contrast.queue_ptr) == 1
    with pytest.raises(ValueError, match="batch of 9 does not fit the CRD queue of 8"):
        crd(plain_step(9))


def test_queue_enqueues_every_ranks_samples(monkeypatch):
    """Under DDP the gathered batch (all ranks, rank order) is enqueued, so every rank keeps the same queue."""
    other_rank = torch.randn(4, FEAT_DIM)
    monkeypatch.setattr(crd_module, "all_gather", lambda t: torch.cat([t, F.normalize(other_rank).to(t.dtype)]))
    crd = queue_crd(nce_k=16)
    step = plain_step(4)
    crd(step)
    v_s, v_t = embeddings(crd, step)
    assert int(crd.contrast.queue_ptr) == 8
    torch.testing.assert_close(crd.contrast.queue_v1[:8], torch.cat([v_s, F.normalize(other_rank)]))
    torch.testing.assert_close(crd.contrast.queue_v2[:8], torch.cat([v_t, F.normalize(other_rank)]))


def test_queue_state_dict_round_trip():
    torch.manual_seed(0)
    crd = queue_crd(nce_k=8)
    for _ in range(3):
        crd(plain_step(4))
    restored = queue_crd(nce_k=8)  # different random queues and heads
    assert not torch.equal(restored.contrast.queue_v1, crd.contrast.queue_v1)
    restored.load_state_dict(state_bytes(crd))
    for name in ("params", "queue_v1", "queue_v2", "queue_ptr"):
        assert torch.equal(getattr(restored.contrast, name), getattr(crd.contrast, name))
    step = plain_step(4)
    torch.testing.assert_close(restored(step), crd(step))
    assert torch.equal(restored.contrast.queue_v2, crd.contrast.queue_v2)
    assert int(restored.contrast.queue_ptr) == int(crd.contrast.queue_ptr) == 0
    # A bank checkpoint is not a queue checkpoint: resuming across modes fails loudly.
    with pytest.raises(RuntimeError, match="queue_v1"):
        restored.load_state_dict(CRD(S_DIM, T_DIM, feat_dim=FEAT_DIM, n_data=20, nce_k=8).state_dict())


def test_queue_loss_stays_float32_under_autocast():
    crd = queue_crd(nce_k=8)
    step = plain_step(4, torch.randn(4, S_DIM).bfloat16(), torch.randn(4, T_DIM).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = crd(step)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert crd.contrast.queue_v1.dtype == torch.float32


def test_queue_mode_end_to_end_through_the_cli(tmp_path):
    """`--method-opt crd_memory=queue` trains from plain batches, records its own protocol and run directory, and
    checkpoints the queues instead of a bank."""
    from data.fake_data import write_cifar100
    from distillers.cli import main
    from distillers.engine.checkpoint import load_checkpoint

    data = write_cifar100(tmp_path / "data", n_train=40, n_test=16, seed=5)
    tiny = ["--epochs", "1", "--max-steps-per-epoch", "2", "--workers", "0", "--batch-size", "8", "--device", "cpu",
            "--data-dir", str(data.root), "--out", str(tmp_path / "runs")]
    assert main(["train-teacher", "--model", "resnet8", *tiny]) == 0
    teacher = tmp_path / "runs" / "resnet8_cifar100_vanilla_trial-1" / "last.pt"
    assert main(["distill", "--teacher", str(teacher), "--student", "resnet8", "--method", "crd", "--nce-k", "24",
                 "--feat-dim", "8", "--method-opt", "crd_memory=queue", *tiny]) == 0
    run = tmp_path / "runs" / "S-resnet8_T-resnet8_cifar100_crd_r-1_a-0_b-0.8_trial-1_crd-queue"
    assert json.loads((run / "config.json").read_text())["protocol"] == "crd-queue"
    state = load_checkpoint(run / "last.pt")["method_state"]
    assert state["contrast.queue_v1"].shape == (24, 8) and "contrast.memory_v1" not in state
    assert int(state["contrast.queue_ptr"]) == 16  # two batches of 8 written into a ring of 24
