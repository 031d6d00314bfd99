"""A Task says what is learned: data, model, loss, batches and metrics.

Protocols and the training loop are written once against this interface, so the
retinopathy classifier and the lung U-Net share every line of the split machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.config import Config
from medsplit.models import StageTable, build_model


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]


class Task:
    """Base class; subclasses fill in the data-specific parts."""

    name = "task"
    select_metric = "loss"
    headline = ("loss",)
    labels_may_cross = False
    """Whether the plan lets targets cross to the server when the server computes the loss."""

    def __init__(self, cfg: Config, data: Any, device: torch.device):
        self.cfg = cfg
        self.data = data
        self.device = device
        self.generator_device = device

    # data ---------------------------------------------------------------
    def split(self, name: str):
        return getattr(self.data, name)

    def _move_to_device(self, *fields: str) -> None:
        # Images stay uint8 on the device: decode once, move once, augment there.
        for name in ("train", "val", "test"):
            part = self.split(name)
            for f in fields:
                setattr(part, f, getattr(part, f).to(self.device))

    def partition_labels(self) -> np.ndarray:
        raise NotImplementedError

    def batch(self, split: str, idx: torch.Tensor, train: bool, generator: torch.Generator | None) -> Batch:
        raise NotImplementedError

    # model --------------------------------------------------------------
    def build_table(self) -> StageTable:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def new_metrics(self):
        raise NotImplementedError

    def update_metrics(self, metrics, output: torch.Tensor, batch: Batch) -> None:
        metrics.update(output, batch.y)

    def summarise(self, metrics: dict) -> dict[str, float]:
        """Scalar metrics for curves and model selection."""
        raise NotImplementedError

    def normalisation(self) -> dict | None:
        """Input standardisation learned from the training split (saved with the run)."""
        return None


class RetinopathyTask(Task):
    """Diabetic-retinopathy grading from colour fundus photographs (split ResNet)."""

    name = "retinopathy"
    metric_label = "AUC"
    labels_may_cross = True  # the two-part classification split: the server holds the labels
    headline = ("auc", "accuracy", "kappa", "sensitivity", "specificity")

    def __init__(self, cfg: Config, data, device: torch.device):
        super().__init__(cfg, data, device)
        from medsplit.data.augment import BatchAugment, channel_stats

        self.select_metric = "auc" if cfg.train.select_on == "auto" else cfg.train.select_on
        self._move_to_device("images", "labels")
        self.mean, self.std = channel_stats(self.data.train.images)
        self.augment = BatchAugment().to(device) if cfg.data.augment else None

    def partition_labels(self) -> np.ndarray:
        return self.data.train.labels.cpu().numpy()

    def normalisation(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    def batch(self, split, idx, train, generator):
        from medsplit.data.augment import to_float

        part = self.split(split)
        idx = idx.to(part.images.device)
        x = to_float(part.images[idx], self.mean, self.std)
        if train and self.augment is not None:
            x = self.augment(x, generator=generator)
        ids = [part.ids[i] for i in idx.tolist()]
        return Batch(x, part.labels[idx], ids)

    def build_table(self) -> StageTable:
        return task_model(self.cfg, self.data.num_classes)

    def loss(self, output, target):
        # The model emits logits; cross_entropy applies log-softmax once (no double softmax).
        return F.cross_entropy(output.float(), target)

    def new_metrics(self):
        from medsplit.metrics import ClassificationMetrics

        return ClassificationMetrics(self.data.num_classes, self.data.class_names)

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch.y, batch.ids)  # ids let the test interval resample patients

    def summarise(self, metrics: dict) -> dict[str, float]:
        return {k: metrics[k] for k in self.headline if isinstance(metrics.get(k), (int, float))}


class LungSegmentationTask(Task):
    """Lung segmentation on chest X-rays (four-part U-shaped split U-Net)."""

    name = "lungs"
    metric_label = "Dice"
    headline = ("dice", "jaccard", "hd95")

    def __init__(self, cfg: Config, data, device: torch.device):
        super().__init__(cfg, data, device)
        from medsplit.data.seg_augment import SegAugment

        self.select_metric = "dice" if cfg.train.select_on == "auto" else cfg.train.select_on
        self._move_to_device("images", "masks")
        self.augment = SegAugment(backend=cfg.data.aug_backend, seed=cfg.train.seed) if cfg.data.augment else None
        from monai.losses import DiceLoss

        self._dice = DiceLoss(sigmoid=True)

    def partition_labels(self) -> np.ndarray:
        # Partition over image groups (source/view) when asked; otherwise one pseudo-class.
        return np.zeros(len(self.data.train), dtype=np.int64)

    def batch(self, split, idx, train, generator):
        part = self.split(split)
        idx = idx.to(part.images.device)
        x = part.images[idx].float() / 255.0
        y = part.masks[idx].float()
        if train and self.augment is not None:
            x, y = self.augment(x, y, generator=generator)
            x, y = x.to(self.device), y.to(self.device)
        ids = [part.ids[i] for i in idx.tolist()]
        return Batch(x, y, ids)

    def build_table(self) -> StageTable:
        return task_model(self.cfg, 1)

    def loss(self, output, target):
        output = output.float()
        return self._dice(output, target) + F.binary_cross_entropy_with_logits(output, target)

    def new_metrics(self):
        from medsplit.metrics import SegmentationMetrics

        return SegmentationMetrics()

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch.y, batch.ids)

    def summarise(self, metrics: dict) -> dict[str, float]:
        out = {}
        for k in self.headline:
            v = metrics.get(k)
            if isinstance(v, dict) and isinstance(v.get("mean"), (int, float)):
                out[k] = v["mean"]
        return out


def task_model(cfg: Config, num_classes: int) -> StageTable:
    """The stage table ``cfg`` trains; :mod:`medsplit.evaluate` rebuilds the same one."""
    if cfg.task == "retinopathy":
        return build_model(cfg.model.name, num_classes=num_classes, weights=cfg.model.weights)
    return build_model(cfg.model.name, num_classes=num_classes, in_channels=1, weights=cfg.model.weights,
                       base_channels=cfg.model.base_channels)


def make_task(cfg: Config, device: torch.device) -> Task:
    """Load the data for ``cfg.task`` and wrap it in its Task."""
    root = cfg.data_root()
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    if cfg.task == "retinopathy":
        from medsplit.data.retinopathy import load_retinopathy

        data = load_retinopathy(
            cfg.data.source, root, target=cfg.data.target, img_size=cfg.data.img_size, seed=cfg.train.seed,
            val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction,
            max_images=cfg.data.max_images, cache_dir=cache, synthetic_size=cfg.data.synthetic_size,
            duplicates=cfg.data.duplicates,
        )
        return RetinopathyTask(cfg, data, device)
    from medsplit.data.lungs import load_lungs

    data = load_lungs(
        cfg.data.source, root, img_size=cfg.data.img_size, seed=cfg.train.seed, test_fraction=cfg.data.test_fraction,
        val_fraction=cfg.data.val_fraction, cache_dir=cache, synthetic_size=cfg.data.synthetic_size,
        max_images=cfg.data.max_images, duplicates=cfg.data.duplicates,
    )
    return LungSegmentationTask(cfg, data, device)


TASKS: dict[str, type[Task]] = {t.name: t for t in (RetinopathyTask, LungSegmentationTask)}
