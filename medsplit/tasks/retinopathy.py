"""Diabetic-retinopathy grading from colour fundus photographs (split ResNet)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.data.augment import BatchAugment, channel_stats, to_float
from medsplit.data.fundus_contrast import local_contrast_cached
from medsplit.data.retinopathy import TARGETS, load_for_evaluation, load_retinopathy
from medsplit.models import StageTable
from medsplit.tasks.base import Batch, ExternalSet, Task, TaskMetrics
from medsplit.tasks.registry import register_task, task_model
from medsplit.tasks.settings import TaskSettings

if TYPE_CHECKING:
    from medsplit.data.retinopathy import RetinopathyData


def _cross_entropy(output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    # The model emits logits; cross_entropy applies log-softmax once (no double softmax).
    return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)


def _preprocess(settings: TaskSettings, images: torch.Tensor) -> torch.Tensor:
    """``data.preprocess`` applied to decoded uint8 images: training, validation, test and
    external images all go through it (a model trained on filtered images sees filtered ones)."""
    if settings.preprocess == "local-contrast":
        return local_contrast_cached(images, settings.cache_dir)
    return images


@register_task
class RetinopathyTask(Task):
    """Diabetic-retinopathy grading from colour fundus photographs (split ResNet).

    Args:
        settings: the run's task settings.
        data: the fundus images and grades, from :meth:`load_data`.
        device: where images, labels and batches live.
    """

    name = "retinopathy"
    metric_label = "AUC"
    primary_metric = "auc"
    labels_may_cross = True  # the two-part classification split: the server holds the labels
    headline = ("auc", "accuracy", "kappa", "sensitivity", "specificity")
    index_columns = (("AUC", "auc"), ("accuracy", "accuracy"))
    in_channels = 3
    unused_settings = ("data.aug_backend", "model.base_channels")
    data: RetinopathyData

    def __init__(self, settings: TaskSettings, data: RetinopathyData, device: torch.device):
        super().__init__(settings, data, device)

        self._move_to_device("images", "labels")
        self.mean, self.std = channel_stats(self.data.train.images)
        right_angles = settings.rotation == "right-angles"
        self.augment = BatchAugment(right_angles=right_angles).to(device) if settings.augment else None
        self._loss = self.loss_function(settings)

    @classmethod
    def load_data(cls, settings: TaskSettings) -> RetinopathyData:
        data = load_retinopathy(
            settings.source, settings.root, target=settings.target, img_size=settings.img_size, seed=settings.seed,
            val_fraction=settings.val_fraction, test_fraction=settings.test_fraction,
            max_images=settings.max_images, cache_dir=settings.cache_dir,
            synthetic_size=settings.synthetic_size, duplicates=settings.duplicates,
        )
        for part in (data.train, data.val, data.test):
            part.images = _preprocess(settings, part.images)
        if settings.preprocess != "none":
            data.notes["preprocess"] = settings.preprocess
        return data

    @classmethod
    def load_external(cls, settings: TaskSettings, data: str, labels: str | None = None) -> ExternalSet:
        """A fundus folder with a labels CSV, an image folder whose CSV is ``labels``, or a
        RetinaMNIST ``.npz`` (its official test split); see :mod:`medsplit.evaluate`."""
        # imports scikit-learn (seconds): the reports read a task's facts without it
        from medsplit.metrics import ClassificationMetrics

        spec = TARGETS[settings.target]
        cache = settings.cache_dir
        images, source = load_for_evaluation(data, settings.root, settings.target, settings.img_size, cache, labels=labels)
        return ExternalSet(_preprocess(settings, images.images), images.labels, images.ids, images.patients, source,
                           ClassificationMetrics(spec.num_classes, list(spec.class_names)))

    @classmethod
    def num_outputs(cls, settings: TaskSettings) -> int:
        return TARGETS[settings.target].num_classes

    @classmethod
    def batch_spec(cls, settings: TaskSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = settings.img_size
        return torch.empty(n, 3, size, size, device="meta"), torch.empty(n, dtype=torch.int64, device="meta")

    @classmethod
    def loss_function(cls, settings: TaskSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if settings.label_smoothing:
            return functools.partial(_cross_entropy, label_smoothing=settings.label_smoothing)
        return _cross_entropy

    def partition_labels(self) -> np.ndarray:
        return self.data.train.labels.cpu().numpy()

    def normalisation(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    def batch(self, split: str, idx: torch.Tensor, train: bool, generator: torch.Generator | None) -> Batch:
        part = self.split(split)
        idx = idx.to(part.images.device)
        x = to_float(part.images[idx], self.mean, self.std)
        if train and self.augment is not None:
            x = self.augment(x, generator=generator)
        ids = [part.ids[i] for i in idx.tolist()]
        return Batch(x, part.labels[idx], ids)

    def build_table(self) -> StageTable:
        return task_model(self.settings, self.data.num_classes)

    def new_metrics(self) -> TaskMetrics:
        # imports scikit-learn (seconds): the reports read a task's facts without it
        from medsplit.metrics import ClassificationMetrics

        return ClassificationMetrics(self.data.num_classes, self.data.class_names)

    def update_metrics(self, metrics: TaskMetrics, output: torch.Tensor, batch: Batch) -> None:
        metrics.update(output, batch.y, batch.ids)  # ids let the test interval resample patients

    def summarise(self, metrics: dict) -> dict[str, float]:
        return {k: metrics[k] for k in self.headline if isinstance(metrics.get(k), (int, float))}
