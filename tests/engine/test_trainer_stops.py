"""The non-finite stop names the method's own way out (KDSVD's guarded SVD), and only when there is one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillers.engine.logging import RunLogger
from distillers.engine.optim import StepSchedule
from distillers.engine.trainer import Loop, NonFiniteLoss, Trainer
from distillers.methods import METHODS


class NanObjective(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 3)

    def forward(self, batch):
        logits = self.linear(batch["image"])
        return logits, {"ce": logits.sum() * float("nan")}


@pytest.mark.parametrize("advice, expected", [("", "; lower --lr or check the inputs"),
                                              (METHODS.get("kdsvd").nonfinite_advice,
                                               "; lower --lr or pass --method-opt svd=guarded (bounded SVD gradient "
                                               "terms)")])
def test_nonfinite_stop_says_the_methods_advice(tmp_path, advice, expected):
    objective = NanObjective()
    batches = [{"image": torch.ones(4, 2), "target": torch.zeros(4, dtype=torch.long)}]
    loop = Loop(eval_model=objective.linear, train_loader=batches, test_loader=batches, device=torch.device("cpu"),
                logger=RunLogger(tmp_path, tensorboard=False), checkpoint_payload=dict, show_progress=False,
                nonfinite_advice=advice)
    trainer = Trainer(loop, objective, torch.optim.SGD(objective.parameters(), 0.1), StepSchedule(0.1))
    with pytest.raises(NonFiniteLoss) as stop:
        trainer.fit(1)
    assert str(stop.value).startswith("the loss became NaN or infinite at epoch 1, step 1 (main stage)")
    assert str(stop.value).endswith(expected)
