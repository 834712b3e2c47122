"""The library page's own-loop example: examples/own_loop.py trains the student through distillers.Distiller and
leaves the teacher untouched."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from distillers import plugins
from distillers.models import create_model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_loop.py"


def test_own_loop_trains_the_student_and_never_the_teacher(capsys: pytest.CaptureFixture) -> None:
    example = plugins.load_plugin(str(EXAMPLE))
    torch.manual_seed(0)
    teacher, student = create_model("resnet14", num_classes=10), create_model("resnet8", num_classes=10)
    teacher_before, student_before = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])) for _ in range(2)]
    distiller = example.distil(teacher, student, batches)
    assert all(torch.equal(value, teacher.state_dict()[key]) for key, value in teacher_before.items())
    assert not torch.equal(student_before["conv1.weight"], student.state_dict()["conv1.weight"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 0", "step 1"]
    loss, terms = distiller(*batches[0])
    assert set(terms) == {"ce", "tckd", "nckd"} and torch.isclose(loss, sum(terms.values()))
