"""Test-only wrapper: run ``distillers`` commands in this process, then save this rank's state beside the run.

Started by ``python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_child.py SPEC.json`` (each process
is one rank, exactly as ``torchrun -m distillers`` would run it), or imported by the tests, whose forked
single-process children call ``install`` before ``distillers.cli.main``. Production code knows nothing of it: it
only wraps public seams (``Trainer.fit``, ``Distillation.forward``/``train``, ``distillers.data.load_datasets``).

SPEC.json is a list of commands, each ``{"args": [...], "dump": folder, "deterministic": bool, "stop_at_step":
int or null, "log_every": int or null}``. After each training stage the rank writes ``<dump>/<stage>_rank<r>.pt``
(the objective's state dict: student, teacher, method buffers) and, for batches carrying sample indices, the
indices it trained on (``<dump>/indices_rank<r>.pt``, one tensor per step).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _rank() -> int:
    from distillers.engine import distributed

    return distributed.rank()


def install(dump: str | Path, deterministic: bool = False, stop_at_step: int | None = None,
            log_every: int | None = None) -> None:
    """Patch this process: dump state after every stage; optionally make a step independent of its batch
    (``deterministic``), SIGTERM rank 1 during its ``stop_at_step``-th step, or check for stops every
    ``log_every`` steps."""
    import torch

    import distillers.data
    from distillers.engine.trainer import Trainer
    from distillers.objective import Distillation

    dump = Path(dump)
    dump.mkdir(parents=True, exist_ok=True)
    fit, forward, train = Trainer.fit, Distillation.forward, Distillation.train
    steps: list[torch.Tensor] = []

    def fit_then_dump(self: Trainer, epochs: int, progress: Any = None) -> Any:
        if log_every is not None:
            self.log_every = log_every
        try:
            return fit(self, epochs, progress)
        finally:  # also when the stage is interrupted
            state = {key: value.detach().clone() for key, value in self.objective.state_dict().items()}
            torch.save(state, dump / f"{self.stage}_rank{_rank()}.pt")
            torch.save(steps, dump / f"indices_rank{_rank()}.pt")

    def recorded_forward(self: Distillation, batch: dict) -> Any:
        if self.training and "index" in batch:
            steps.append(batch["index"].detach().cpu().clone())
            if stop_at_step is not None and len(steps) == stop_at_step and _rank() == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # one rank asks to stop: every rank must stop with it
        return forward(self, batch)

    Trainer.fit = fit_then_dump
    Distillation.forward = recorded_forward
    if deterministic:
        # With the student's BatchNorm in eval mode and no random augmentation, a sample's loss and gradient do not
        # depend on which process or batch it is in: 2 x 8 must then equal 1 x 16 up to float rounding. (On GPUs
        # --sync-bn gives BatchNorm over the global batch; gloo on CPU cannot run SyncBatchNorm.)
        load_datasets = distillers.data.load_datasets

        def without_augmentation(dataset: str, data_dir: Any, **options: Any) -> Any:
            spec = distillers.data.get_dataset(dataset)
            return load_datasets(dataset, data_dir, train_transform=spec.test_transform(), **options)

        def frozen_student_bn(self: Distillation, mode: bool = True) -> Distillation:
            train(self, mode)
            self.student.eval()
            return self

        distillers.data.load_datasets = without_augmentation
        Distillation.train = frozen_student_bn
        # CPU's auto choices since they were measured: the device-resident loader augments by itself (keep the
        # DataLoader, whose transforms were just made augmentation-free), and channels-last convolutions round
        # differently at batch 8 and 16 (about 2e-5 after two epochs): compare the plain paths.
        from distillers.engine import speed

        speed.use_device_data = lambda *args, **kwargs: False
        speed.use_channels_last = lambda *args, **kwargs: False


def bank_update_check(dump: Path) -> None:
    """Every rank scores and updates a CRD memory bank with its own half of a batch; the test compares the result
    with one process updating with the whole (gathered) batch."""
    import torch

    from distillers.methods.crd import ContrastMemory

    torch.manual_seed(0)  # the same bank on every rank
    memory = ContrastMemory(feat_dim=4, n_data=10, nce_k=3, nce_t=0.07, nce_m=0.5)
    generator = torch.Generator().manual_seed(100 + _rank())  # each rank its own samples
    v_s = torch.nn.functional.normalize(torch.randn(2, 4, generator=generator), dim=1)
    v_t = torch.nn.functional.normalize(torch.randn(2, 4, generator=generator), dim=1)
    index = torch.tensor([2 * _rank(), 2 * _rank() + 5])  # distinct rows across ranks
    contrast = torch.randint(0, 10, (2, 4), generator=generator)
    out_s, out_t = memory(v_s, v_t, index, contrast)
    torch.save({"inputs": (v_s, v_t, index, contrast), "state": memory.state_dict(), "out": (out_s, out_t)},
               dump / f"bank_rank{_rank()}.pt")


def main(spec_path: str) -> int:
    import torch.distributed as dist

    from distillers.cli import main as cli_main

    commands = json.loads(Path(spec_path).read_text())
    codes = []
    for command in commands:
        install(command["dump"], command.get("deterministic", False), command.get("stop_at_step"),
                command.get("log_every"))
        codes.append(cli_main(command["args"]))  # each command joins and leaves the process group itself
        _restore()
    dist.init_process_group("gloo")
    try:
        bank_update_check(Path(commands[0]["dump"]).parent)
    finally:
        dist.destroy_process_group()
    Path(spec_path).with_suffix(f".codes{os.environ['RANK']}.json").write_text(json.dumps(codes))
    return 0


_ORIGINALS: dict[str, Any] = {}


def _remember() -> None:
    import distillers.data
    from distillers.engine import speed
    from distillers.engine.trainer import Trainer
    from distillers.objective import Distillation

    _ORIGINALS.update(device_data=speed.use_device_data, channels_last=speed.use_channels_last)
    _ORIGINALS.update(fit=Trainer.fit, forward=Distillation.forward, train=Distillation.train,
                      load=distillers.data.load_datasets)


def _restore() -> None:
    import distillers.data
    from distillers.engine.trainer import Trainer
    from distillers.objective import Distillation

    Trainer.fit, Distillation.forward = _ORIGINALS["fit"], _ORIGINALS["forward"]
    Distillation.train, distillers.data.load_datasets = _ORIGINALS["train"], _ORIGINALS["load"]
    from distillers.engine import speed

    speed.use_device_data, speed.use_channels_last = _ORIGINALS["device_data"], _ORIGINALS["channels_last"]


if __name__ == "__main__":
    _remember()
    sys.exit(main(sys.argv[1]))
