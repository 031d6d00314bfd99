"""What every task is: the :class:`Task` interface and the types it works with.

A Task says what is learned: data, model, loss, batches and metrics. Protocols, the training
loop, evaluation and reports are written once against this interface and ask the task class
(``TASKS[name].something``) rather than compare task names, so a new task is one new module
in :mod:`medsplit.tasks` that registers its class (:mod:`medsplit.tasks.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from medsplit.models import StageTable
from medsplit.tasks.settings import TaskSettings


@dataclass
class Batch:
    """One batch as the model and the loss take it.

    Args:
        x: float images ``(B, C, H, W)`` on the task's device, normalised and augmented.
        y: targets as the loss takes them (class indices, or float masks).
        ids: image ids, in batch order (metrics use them to resample patients).
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]


class TaskMetrics(Protocol):
    """What the loop needs of a task's metric accumulator (``ClassificationMetrics``,
    ``SegmentationMetrics`` of :mod:`medsplit.metrics`)."""

    def update(self, output: torch.Tensor, target: torch.Tensor, ids: list[str] | None = None) -> None:
        """Add one batch of model outputs (logits) and targets."""

    def aggregate(self) -> dict[str, Any]:
        """Every metric over all batches so far (JSON-able)."""


class TaskSplit(Protocol):
    """One split of a task's data (``ImageSet``, ``SegmentationSet``): the fields the tasks and
    the loop read; the concrete containers add the task's targets."""

    images: torch.Tensor
    ids: list[str]

    def __len__(self) -> int: ...


class TaskData(Protocol):
    """A task's data (``RetinopathyData``, ``SegmentationData``): three patient-disjoint splits,
    where they came from, and a summary for the run record."""

    train: TaskSplit
    val: TaskSplit
    test: TaskSplit
    source: str
    synthetic: bool

    def summary(self) -> dict: ...


@dataclass
class ExternalSet:
    """Every image of an external data set, unsplit, for scoring a trained run on it.

    Args:
        images: uint8 ``(N, C, H, W)``, as the task's data containers keep them.
        targets: stored targets (see :meth:`Task.as_target`).
        ids: image ids.
        patients: patient per image (``None``: unknown), for patient-level intervals.
        source: what the images are, for the result JSON.
        metrics: a fresh accumulator for the task's metrics on this set.
    """

    images: torch.Tensor
    targets: torch.Tensor
    ids: list[str]
    patients: list[str] | None
    source: str
    metrics: TaskMetrics


class Task:
    """Base class; subclasses fill in the data-specific parts and register with
    :func:`~medsplit.tasks.registry.register_task`.

    Class attributes say what the rest of the code may ask without data or an instance:

    * ``name``: the ``task`` config value.
    * ``metric_label`` / ``primary_metric``: the headline metric's display name and its key in
      the metrics JSON (also the default ``train.select_on``).
    * ``per_image_metric``: the headline metric is a per-image summary ``{"mean": ...}``.
    * ``headline``: the scalar metrics of curves and the final line, most important first.
    * ``index_columns``: (display name, metrics key) of the report index's columns.
    * ``labels_may_cross``: whether the plan lets targets cross to the server when the server
      computes the loss.
    * ``in_channels``: image channels the model takes.
    * ``unused_settings``: config keys that do nothing for this task (left out of reports).

    Args:
        settings: the run's task settings.
        data: the task's data, as :meth:`load_data` returns it.
        device: where batches and the model live.
    """

    name: ClassVar[str] = "task"
    metric_label: ClassVar[str] = "loss"
    primary_metric: ClassVar[str] = "loss"
    per_image_metric: ClassVar[bool] = False
    headline: ClassVar[tuple[str, ...]] = ("loss",)
    index_columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    labels_may_cross: ClassVar[bool] = False
    in_channels: ClassVar[int] = 3
    unused_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: TaskSettings, data: TaskData, device: torch.device):
        self.settings = settings
        self.data = data
        self.device = device
        self.select_metric = self.primary_metric if settings.select_on == "auto" else settings.select_on

    # class-level: what is known from the settings alone ---------------------------
    @classmethod
    def load_data(cls, settings: TaskSettings) -> TaskData:
        """Load (and split) the data ``settings`` names.

        Args:
            settings: the run's task settings (``data.*``, ``train.seed``).

        Returns:
            the task's data container (train/val/test splits, source, summary).
        """
        raise NotImplementedError

    @classmethod
    def load_external(cls, settings: TaskSettings, data: str, labels: str | None = None) -> ExternalSet:
        """Every image of an external data set, for ``python -m medsplit evaluate``.

        Args:
            settings: the trained run's task settings (image size, target, data root, cache).
            data: a set name, folder or file (see :mod:`medsplit.evaluate`).
            labels: a CSV of targets kept outside ``data``, where the task supports one.

        Returns:
            every image with its target, and a fresh metric accumulator.
        """
        raise NotImplementedError(f"task {cls.name!r} has no external validation")

    @classmethod
    def num_outputs(cls, settings: TaskSettings) -> int:
        """Classes (or output channels) of the model, known from the settings alone: the server,
        which never sees the data, builds the same model from it.

        Args:
            settings: the run's task settings.

        Returns:
            the ``num_classes`` the model is built with.
        """
        raise NotImplementedError

    @classmethod
    def model_kwargs(cls, settings: TaskSettings, num_classes: int) -> dict[str, Any]:
        """Keyword arguments of :func:`medsplit.models.build_model` for this task, weights aside.

        Args:
            settings: the run's task settings (``model.*``).
            num_classes: classes or output channels of the model.

        Returns:
            ``num_classes``, ``in_channels`` and any task-specific model setting.
        """
        return {"num_classes": num_classes, "in_channels": cls.in_channels}

    @classmethod
    def batch_spec(cls, settings: TaskSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes (meta tensors) of a batch of ``n`` images and targets: all the server knows of it.

        Args:
            settings: the run's task settings (``data.img_size``).
            n: images in the batch.

        Returns:
            ``(images, targets)`` on the meta device: shapes and dtypes only.
        """
        raise NotImplementedError

    @classmethod
    def loss_function(cls, settings: TaskSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss ``(output, target) -> scalar`` without the data (the server computes it when
        it holds the last part; a task instance uses the same function).

        Args:
            settings: the run's task settings.

        Returns:
            a function of the model's logits and ``Batch.y`` giving the scalar loss.
        """
        raise NotImplementedError

    @classmethod
    def as_target(cls, stored: torch.Tensor) -> torch.Tensor:
        """A target as the data containers store it, as the loss and the metrics take it.

        Args:
            stored: targets of one batch, as kept in the task's data.
        """
        return stored

    @classmethod
    def judged_by(cls, metrics: dict) -> tuple[str, float | None]:
        """The metric a run is judged by: its display name and its value in ``metrics``
        (``None`` when absent or undefined).

        Args:
            metrics: a metrics dict (e.g. ``metrics.json["test"]``).

        Returns:
            ``(name, value)``, e.g. ``("AUC", 0.81)`` or ``("mean Dice", None)``.
        """
        value = metrics.get(cls.primary_metric)
        if cls.per_image_metric:
            value = (value or {}).get("mean")
        label = f"mean {cls.metric_label}" if cls.per_image_metric else cls.metric_label
        return label, float(value) if isinstance(value, (int, float)) else None

    # data ---------------------------------------------------------------
    def split(self, name: str) -> TaskSplit:
        """The ``train``, ``val`` or ``test`` split of the data.

        Args:
            name: ``train``, ``val`` or ``test``.
        """
        return getattr(self.data, name)

    def _move_to_device(self, *fields: str) -> None:
        # Images stay uint8 on the device: decode once, move once, augment there.
        for name in ("train", "val", "test"):
            part = self.split(name)
            for f in fields:
                setattr(part, f, getattr(part, f).to(self.device))

    def partition_labels(self) -> np.ndarray:
        """One label per training image, for label-skewed client partitions."""
        raise NotImplementedError

    def batch(self, split: str, idx: torch.Tensor, train: bool, generator: torch.Generator | None) -> Batch:
        """The images ``idx`` of ``split`` as a :class:`Batch`.

        Args:
            split: ``train``, ``val`` or ``test``.
            idx: positions in the split.
            train: augment (when the settings ask for it: ``data.augment``).
            generator: the augmentation generator (see ``augmentation_generator``).
        """
        raise NotImplementedError

    # model --------------------------------------------------------------
    def build_table(self) -> StageTable:
        """The model to train, as a stage table."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch.

        Args:
            output: the model's logits.
            target: ``Batch.y``.
        """
        return self._loss(output, target)

    def new_metrics(self) -> TaskMetrics:
        """A fresh metric accumulator for one pass over a split."""
        raise NotImplementedError

    def update_metrics(self, metrics: TaskMetrics, output: torch.Tensor, batch: Batch) -> None:
        """Add one batch's outputs to ``metrics``.

        Args:
            metrics: from :meth:`new_metrics`.
            output: the model's logits.
            batch: the batch they came from.
        """
        metrics.update(output, batch.y)

    def summarise(self, metrics: dict) -> dict[str, float]:
        """Scalar metrics for curves and model selection.

        Args:
            metrics: ``TaskMetrics.aggregate()``.
        """
        raise NotImplementedError

    def normalisation(self) -> dict | None:
        """Input standardisation learned from the training split (saved with the run)."""
        return None

    def report_examples(self, model: torch.nn.Module, test: dict) -> dict | None:
        """Example images for the run report (``None``: the task shows none).

        Args:
            model: the tested model.
            test: the test metrics.
        """
        return None
