"""What the server knows of a run without any data: the shapes of a batch (meta tensors), the
task's loss and the model it builds from the same seed as every hospital. All of it follows
from the task's settings alone (:class:`~medsplit.tasks.TaskSettings`), which every party
resolves from the same config."""

from __future__ import annotations

import torch

from medsplit.tasks import TASKS, TaskSettings, task_model


def batch_spec(settings: TaskSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes (meta tensors) of a batch of ``n`` images and targets: all the server knows of it."""
    return TASKS[settings.task].batch_spec(settings, n)


def server_loss(settings: TaskSettings):
    """The task's loss without its data (the server computes it when it holds the last part)."""
    return TASKS[settings.task].loss_function(settings)


def server_table(settings: TaskSettings):
    """The model the server builds (same seed, same init as every hospital), without data."""
    return task_model(settings, TASKS[settings.task].num_outputs(settings))
