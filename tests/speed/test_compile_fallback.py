"""``--compile``: the eager fallback triggers at the first call, where torch.compile compiles (issue 13, defect 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillers.config import RunConfig
from distillers.engine import speed

FAILING = "distillers_test_failing_backend"


@pytest.fixture
def failing_backend(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A dynamo backend that fails to compile anything (as inductor does without a working C++ compiler)."""
    from torch._dynamo import list_backends, register_backend

    attempts: list[int] = []
    if FAILING not in list_backends(exclude_tags=()):
        @register_backend(name=FAILING)
        def _fail(graph, example_inputs):
            attempts.append(1)
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
    monkeypatch.setattr(speed, "COMPILE_BACKEND", FAILING)
    torch._dynamo.reset()
    yield attempts
    torch._dynamo.reset()


def test_first_call_falls_back_to_eager_with_one_line(failing_backend, capsys):
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Linear(6, 5), nn.ReLU()), nn.Linear(6, 5)
    keys = list(student.state_dict())
    x = torch.randn(3, 6)
    expected = student(x), teacher(x)
    guard = speed.compile_models([student, teacher], RunConfig(compile=True))
    assert guard is not None and guard.fell_back is None  # torch.compile returned at once: nothing failed yet
    assert torch.equal(student(x), expected[0])  # the first call compiles, fails, and runs eagerly
    assert torch.equal(teacher(x), expected[1])
    assert torch.equal(student(x), expected[0])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "compilation fell back to eager" in lines[0] and "InvalidCxxCompiler" in lines[0]
    assert "forward" not in student.__dict__ and "forward" not in teacher.__dict__  # plain eager modules again
    assert list(student.state_dict()) == keys


def test_a_genuine_model_error_is_not_hidden(failing_backend):
    model = nn.Linear(6, 5)
    speed.compile_models([model], RunConfig(compile=True))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model(torch.randn(3, 7))


def test_compile_off_leaves_models_alone():
    model = nn.Linear(2, 2)
    assert speed.compile_models([model], RunConfig(compile=False)) is None
    assert "forward" not in model.__dict__
