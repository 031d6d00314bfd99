"""The tasks, where the training code has always imported them from; they live in :mod:`medsplit.tasks`."""

from medsplit.tasks import (
    TASKS,
    Batch,
    ExternalSet,
    LungSegmentationTask,
    RetinopathyTask,
    Task,
    TaskData,
    TaskMetrics,
    TaskSplit,
    make_task,
    register_task,
    task_class,
    task_model,
    task_of_record,
)

__all__ = ["TASKS", "Batch", "ExternalSet", "LungSegmentationTask", "RetinopathyTask", "Task", "TaskData", "TaskMetrics",
           "TaskSplit", "make_task", "register_task", "task_class", "task_model", "task_of_record"]
