"""The task registry: :data:`TASKS` and the functions that look a task up by name."""

from __future__ import annotations

import torch

from medsplit.models import StageTable, build_model
from medsplit.tasks.base import Task
from medsplit.tasks.settings import TaskSettings

#: Task name -> class; each task module registers its class with :func:`register_task`.
TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add ``cls`` to :data:`TASKS` under ``cls.name``."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice ({TASKS[cls.name].__name__} and {cls.__name__})")
    TASKS[cls.name] = cls
    return cls


def task_class(name: str) -> type[Task]:
    """The registered task ``name``; a clear error listing the choices otherwise.

    Args:
        name: a ``task`` config value.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks are {sorted(TASKS)}")
    return TASKS[name]


def task_of_record(record: dict) -> type[Task]:
    """The task a saved run record (``metrics.json``) belongs to: its ``task`` field; for a record
    without a known one, the task whose headline metric its test metrics hold; else the default
    task (:attr:`TaskSettings.task`'s default, the config's).

    Args:
        record: a run's ``metrics.json`` or report JSON.
    """
    name = record.get("task")
    if name in TASKS:
        return TASKS[name]
    test = record.get("test") or {}
    for cls in TASKS.values():
        if cls.primary_metric in test:
            return cls
    return TASKS[TaskSettings.task]


def task_model(settings: TaskSettings, num_classes: int) -> StageTable:
    """The stage table ``settings`` trains; :mod:`medsplit.evaluate` rebuilds the same one.

    Args:
        settings: the run's task settings.
        num_classes: classes or output channels of the model.
    """
    kwargs = task_class(settings.task).model_kwargs(settings, num_classes)
    return build_model(settings.model, weights=settings.weights, **kwargs)


def make_task(settings: TaskSettings, device: torch.device) -> Task:
    """Load the data for ``settings.task`` and wrap it in its Task.

    Args:
        settings: the run's task settings.
        device: where the task keeps its images and builds batches.
    """
    cls = task_class(settings.task)
    return cls(settings, cls.load_data(settings), device)
