"""What the server knows of a run without any data: the shapes of a batch (meta tensors), the
task's loss and the model it builds from the same seed as every hospital."""

from __future__ import annotations

import torch

from medsplit.config import Config
from medsplit.tasks import TASKS, task_model


def batch_spec(cfg: Config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes (meta tensors) of a batch of ``n`` images and targets: all the server knows of it."""
    return TASKS[cfg.task].batch_spec(cfg, n)


def server_loss(cfg: Config):
    """The task's loss without its data (the server computes it when it holds the last part)."""
    return TASKS[cfg.task].loss_function(cfg)


def server_table(cfg: Config):
    """The model the server builds (same seed, same init as every hospital), without data."""
    return task_model(cfg, TASKS[cfg.task].num_outputs(cfg))
