"""--lr-decay-epochs: unsorted or repeated epochs are refused in one line; epochs beyond --epochs are allowed."""

from __future__ import annotations

import pytest

from distillers.config import RunConfig, decay_note

from . import harness


@pytest.mark.parametrize("epochs, fix", [("5,1", "did you mean 1,5?"), ("2,2", "did you mean 2?"),
                                         ("1,3,2", "did you mean 1,2,3?")])
def test_unsorted_or_repeated_decay_epochs_are_refused(assets, workspace, epochs, fix):
    before = harness.snapshot(workspace)
    outcome = harness.run(["train-teacher", "--model", "resnet8", "--epochs", "1", "--lr-decay-epochs", epochs,
                           "--out", "runs", *assets.flags()], workspace)
    harness.assert_user_error(outcome, f"--lr-decay-epochs must be increasing with no repeats, got {epochs}", fix)
    assert harness.snapshot(workspace) == before


def test_decay_epochs_beyond_the_run_are_noted_once():
    assert decay_note(RunConfig(epochs=240)) is None
    assert decay_note(RunConfig(epochs=160)) == ("note: --lr-decay-epochs 180,210 not before the end of this 160-epoch "
                                                 "run: the lr decays only after epoch(s) 150")
    assert decay_note(RunConfig(epochs=2)).endswith("this 2-epoch run: the lr never decays")
    RunConfig(epochs=2).validate()  # allowed: smoke runs keep the seed's schedule
