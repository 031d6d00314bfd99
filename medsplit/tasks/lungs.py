"""Lung segmentation on chest X-rays (four-part U-shaped split U-Net)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.data.lungs import load_lungs
from medsplit.data.seg_augment import SegAugment
from medsplit.models import StageTable
from medsplit.tasks.base import Batch, ExternalSet, Task, TaskMetrics
from medsplit.tasks.registry import register_task, task_model
from medsplit.tasks.settings import TaskSettings

if TYPE_CHECKING:
    from medsplit.data.lungs import SegmentationData


@register_task
class LungSegmentationTask(Task):
    """Lung segmentation on chest X-rays (four-part U-shaped split U-Net).

    Args:
        settings: the run's task settings.
        data: the chest X-rays and lung masks, from :meth:`load_data`.
        device: where images, masks and batches live.
    """

    name = "lungs"
    metric_label = "Dice"
    primary_metric = "dice"
    per_image_metric = True  # SegmentationMetrics summarise per-image values as {"mean": ...}
    headline = ("dice", "jaccard", "hd95")
    index_columns = (("Dice", "dice"), ("Jaccard", "jaccard"))
    labels_may_cross = False  # U-shaped: the client keeps the last part, so the masks never cross
    in_channels = 1
    unused_settings = ("data.target", "data.preprocess", "data.rotation")
    data: SegmentationData

    def __init__(self, settings: TaskSettings, data: SegmentationData, device: torch.device):
        super().__init__(settings, data, device)

        self._move_to_device("images", "masks")
        self.augment = SegAugment(backend=settings.aug_backend, seed=settings.seed) if settings.augment else None
        self._loss = self.loss_function(settings)

    @classmethod
    def load_data(cls, settings: TaskSettings) -> SegmentationData:
        return load_lungs(
            settings.source, settings.root, img_size=settings.img_size, seed=settings.seed,
            test_fraction=settings.test_fraction, val_fraction=settings.val_fraction,
            cache_dir=settings.cache_dir,
            synthetic_size=settings.synthetic_size, max_images=settings.max_images, duplicates=settings.duplicates,
        )

    @classmethod
    def load_external(cls, settings: TaskSettings, data: str, labels: str | None = None) -> ExternalSet:
        """A lung set name, a combined source, or any folder with ``images/`` and ``masks/``
        sharing stems; every image is scored (see :mod:`medsplit.evaluate`)."""
        if labels is not None:
            raise ValueError("--labels is for fundus runs (a CSV of grades); a lung folder pairs images/ with masks/ by stem")
        # imports scikit-learn (seconds): the reports read a task's facts without it
        from medsplit.metrics import SegmentationMetrics

        # No split: every image of the folder is scored (test_fraction = val_fraction = 0 keeps all in "train").
        d = load_lungs(data, settings.root, img_size=settings.img_size, seed=settings.seed, test_fraction=0.0,
                       val_fraction=0.0, cache_dir=settings.cache_dir)
        if d.synthetic:
            raise ValueError("external validation needs real data: pass a lung folder with --data, not the synthetic source")
        parts = (d.train, d.val, d.test)
        images = torch.cat([p.images for p in parts])
        masks = torch.cat([p.masks for p in parts])
        ids = [i for p in parts for i in p.ids]
        patients = [q for p in parts for q in (p.patients or p.ids)]
        return ExternalSet(images, masks, ids, patients, d.source, SegmentationMetrics(spacing_by_id=d.spacing))

    @classmethod
    def num_outputs(cls, settings: TaskSettings) -> int:
        return 1  # one lung-mask channel

    @classmethod
    def model_kwargs(cls, settings: TaskSettings, num_classes: int) -> dict[str, Any]:
        return {"num_classes": num_classes, "in_channels": cls.in_channels, "base_channels": settings.base_channels}

    @classmethod
    def batch_spec(cls, settings: TaskSettings, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = settings.img_size
        return torch.empty(n, 1, size, size, device="meta"), torch.empty(n, 1, size, size, device="meta")

    @classmethod
    def loss_function(cls, settings: TaskSettings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        # Built at the first call: monai takes seconds to import, and a party process that never
        # computes the loss (the server of a U-shaped split) need not pay for it.
        dice = None

        def dice_plus_bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            nonlocal dice
            if dice is None:
                from monai.losses import DiceLoss  # seconds to import: see above

                dice = DiceLoss(sigmoid=True)
            output = output.float()
            return dice(output, target) + F.binary_cross_entropy_with_logits(output, target)

        return dice_plus_bce

    @classmethod
    def as_target(cls, stored: torch.Tensor) -> torch.Tensor:
        return stored.float()  # masks are stored as uint8 {0, 1}

    def partition_labels(self) -> np.ndarray:
        # Partition over image groups (source/view) when asked; otherwise one pseudo-class.
        return np.zeros(len(self.data.train), dtype=np.int64)

    def batch(self, split: str, idx: torch.Tensor, train: bool, generator: torch.Generator | None) -> Batch:
        part = self.split(split)
        idx = idx.to(part.images.device)
        x = part.images[idx].float() / 255.0
        y = self.as_target(part.masks[idx])
        if train and self.augment is not None:
            x, y = self.augment(x, y, generator=generator)
            x, y = x.to(self.device), y.to(self.device)
        ids = [part.ids[i] for i in idx.tolist()]
        return Batch(x, y, ids)

    def build_table(self) -> StageTable:
        return task_model(self.settings, self.num_outputs(self.settings))

    def new_metrics(self) -> TaskMetrics:
        # imports scikit-learn (seconds): the reports read a task's facts without it
        from medsplit.metrics import SegmentationMetrics

        # HD95 in mm where every image's NIfTI header gave its spacing, else in pixels
        return SegmentationMetrics(spacing_by_id=self.data.spacing)

    def update_metrics(self, metrics: TaskMetrics, output: torch.Tensor, batch: Batch) -> None:
        metrics.update(output, batch.y, batch.ids)

    def summarise(self, metrics: dict) -> dict[str, float]:
        out = {}
        for k in self.headline:
            v = metrics.get(k)
            if isinstance(v, dict) and isinstance(v.get("mean"), (int, float)):
                out[k] = v["mean"]
        return out

    def report_examples(self, model: torch.nn.Module, test: dict) -> dict:
        """Best, median and worst test images by Dice, with predicted and true masks."""
        return segmentation_examples(self, model, test)


@torch.no_grad()
def segmentation_examples(task: Task, model: torch.nn.Module, test: dict, per_kind: int = 2) -> dict:
    """Best, median and worst test images by Dice, with predicted and true masks.

    Args:
        task: the run's lung task (its test split).
        model: the tested model.
        test: the test metrics, with ``per_image`` Dice.
        per_kind: images of each kind.
    """
    rows = sorted(test.get("per_image", []), key=lambda r: r["dice"])
    if not rows:
        return {}
    picks = rows[-per_kind:][::-1] + rows[len(rows) // 2 - per_kind // 2 : len(rows) // 2 - per_kind // 2 + per_kind] + rows[:per_kind]
    labels = ["best"] * per_kind + ["median"] * per_kind + ["worst"] * per_kind
    part = task.split("test")
    where = {i: n for n, i in enumerate(part.ids)}
    idx = torch.tensor([where[r["id"]] for r in picks])
    batch = task.batch("test", idx, train=False, generator=None)
    model.eval()
    pred = torch.sigmoid(model(batch.x).float()) > 0.5
    return {
        "images": batch.x[:, 0].float().cpu().numpy(),
        "pred": pred[:, 0].cpu().numpy(),
        "true": batch.y[:, 0].cpu().numpy() > 0.5,
        "titles": [f"{lab}: {r['id']} Dice {r['dice']:.3f}" for lab, r in zip(labels, picks)],
    }
