"""Tasks: what is learned (data, model, loss, batches, metrics), one module per task.

``TASKS`` maps the ``task`` config value to its :class:`Task` class. A new task is one module
here whose class is decorated with :func:`register_task`, plus its import below (and its name in
the config's list of task choices). A task reads the run's settings from a :class:`TaskSettings`
(plain values the runner resolves from the config once), never from the config itself.
"""

from medsplit.tasks.base import (
    Batch,
    ExternalSet,
    Task,
    TaskData,
    TaskMetrics,
    TaskSplit,
)
from medsplit.tasks.lungs import LungSegmentationTask
from medsplit.tasks.registry import (
    TASKS,
    make_task,
    register_task,
    task_class,
    task_model,
    task_of_record,
)
from medsplit.tasks.retinopathy import RetinopathyTask
from medsplit.tasks.settings import TaskSettings

__all__ = [
    "TASKS",
    "Batch",
    "ExternalSet",
    "LungSegmentationTask",
    "RetinopathyTask",
    "Task",
    "TaskData",
    "TaskMetrics",
    "TaskSettings",
    "TaskSplit",
    "make_task",
    "register_task",
    "task_class",
    "task_model",
    "task_of_record",
]
