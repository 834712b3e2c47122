"""The task registry: a task's name (``RunConfig.task``) -> the builder that describes its job."""

from __future__ import annotations

from collections.abc import Callable

import torch

from distillers.config import RunConfig
from distillers.engine.distributed import DistInfo
from distillers.engine.run import Job
from distillers.registry import Registry

Builder = Callable[[RunConfig, DistInfo, torch.device], Job]
TASKS: Registry[Builder] = Registry("task")
