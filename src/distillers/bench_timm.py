"""``distillers bench --vs timm``: our KD training step beside timm's ``LogitDistillationTask`` on the same models.

Both sides train a copy of the same student (same initial weights) from the same frozen teacher on the same
batches, with the same objective (cross-entropy + KL at temperature 4, weights 1 and 1: timm's ``task_loss_weight``
and ``distill_loss_weight``, our ``-r 1 -a 1 -b 0``), the same SGD, in eager float32. A step is forward, backward
and optimiser step; the two pipelines alternate in blocks so that machine load affects both alike. On CUDA steps are
timed with CUDA events, on CPU with ``perf_counter``. The ratio is timm's time per step over ours (>= 1: ours is
as fast or faster).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

DEFAULT_TEACHER, DEFAULT_STUDENT = "resnet18", "mobilenetv3_small_050"


def _steps(task: nn.Module, optimizer: torch.optim.Optimizer, call: Callable[[torch.Tensor, torch.Tensor], Any],
           batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Seconds for one training step per batch in ``batches`` (a sync before and after)."""
    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        loss = call(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for images, labels in batches:
            step(images, labels)
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000.0
    began = time.perf_counter()
    for images, labels in batches:
        step(images, labels)
    return time.perf_counter() - began


def build(teacher_name: str, student_name: str, num_classes: int, device: torch.device) -> dict[str, Any]:
    """The two pipelines on one teacher and two identical students."""
    import timm
    from timm.task import LogitDistillationTask

    from distillers.api import Distiller

    torch.manual_seed(0)
    teacher = timm.create_model(teacher_name, num_classes=num_classes).to(device).eval()
    student = timm.create_model(student_name, num_classes=num_classes).to(device)
    theirs = LogitDistillationTask(copy.deepcopy(student), teacher, temperature=4.0, task_loss_weight=1.0,
                                   distill_loss_weight=1.0, device=device, verbose=False).train()
    ours = Distiller(teacher, student, "kd", gamma=1.0, alpha=1.0, beta=0.0, kd_T=4.0).to(device).train()
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    return {"timm": (theirs, torch.optim.SGD(theirs.trainable_module.parameters(), **sgd),
                     lambda x, y: theirs(x, y)["loss"]),
            "ours": (ours, torch.optim.SGD(ours.trainable_parameters(), **sgd), lambda x, y: ours(x, y)[0])}


def bench_vs_timm(teacher: str = DEFAULT_TEACHER, student: str = DEFAULT_STUDENT, batch_size: int = 64,
                  input_size: int = 32, steps: int = 20, warmup: int = 3, device: str = "auto",
                  rounds: int = 4, num_classes: int = 100) -> dict[str, Any]:
    """Seconds per step of each pipeline and their ratio, alternating ``rounds`` blocks of ``steps / rounds``."""
    torch_device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                "cpu" if device == "auto" else device)
    pipelines = build(teacher, student, num_classes, torch_device)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch_size, 3, input_size, input_size, generator=generator).to(torch_device),
                torch.randint(0, num_classes, (batch_size,), generator=generator).to(torch_device))
               for _ in range(max(1, steps // rounds))]
    for task, optimizer, call in pipelines.values():
        _steps(task, optimizer, call, batches[:1] * warmup, torch_device)
    seconds = {name: 0.0 for name in pipelines}
    for _ in range(rounds):
        for name, (task, optimizer, call) in pipelines.items():
            seconds[name] += _steps(task, optimizer, call, batches, torch_device)
    timed = rounds * len(batches)
    per_step = {name: value / timed for name, value in seconds.items()}
    return {"teacher": f"timm:{teacher}", "student": f"timm:{student}", "batch_size": batch_size,
            "input_size": input_size, "steps": timed, "device": str(torch_device),
            "timm_ms_per_step": 1000 * per_step["timm"], "ours_ms_per_step": 1000 * per_step["ours"],
            "ratio": per_step["timm"] / per_step["ours"]}


def format_result(result: dict[str, Any]) -> str:
    return (f"KD step, {result['teacher']} -> {result['student']}, batch {result['batch_size']} at "
            f"{result['input_size']} px on {result['device']}, {result['steps']} steps each:\n"
            f"  timm LogitDistillationTask  {result['timm_ms_per_step']:.1f} ms/step\n"
            f"  distillers Distiller (kd)   {result['ours_ms_per_step']:.1f} ms/step\n"
            f"  ratio timm/ours             {result['ratio']:.2f}x")
