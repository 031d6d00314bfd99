"""What a task needs to know of a run, as plain values: :class:`TaskSettings`.

A task (its data, model, loss, batches and metrics) reads only these, never the run's whole
config: the runner resolves them once (:meth:`TaskSettings.from_config`) and the task layer
below it cannot come back for more. A setting a new task needs is one field here, filled in
``from_config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medsplit.config import Config
from medsplit.config.schema import default_data_root


@dataclass(frozen=True)
class TaskSettings:
    """The settings of one task of one run (see :class:`medsplit.config.Config` for each key's
    meaning; the comment after each field names the config key it comes from). The defaults are
    the config's, so ``TaskSettings()`` is what a default config gives."""

    task: str = "retinopathy"  # task
    # the data: where it is, how it is split, how images are prepared
    source: str = "auto"  # data.source
    root: Path = field(default_factory=default_data_root)  # data.root, else $MEDSPLIT_DATA, else datasets/
    target: str = "referable"  # data.target
    img_size: int = 128  # data.img_size
    val_fraction: float = 0.15  # data.val_fraction
    test_fraction: float = 0.2  # data.test_fraction
    max_images: int | None = None  # data.max_images
    synthetic_size: int = 600  # data.synthetic_size
    augment: bool = True  # data.augment
    preprocess: str = "none"  # data.preprocess
    rotation: str = "any"  # data.rotation
    aug_backend: str = "monai"  # data.aug_backend
    cache_dir: Path | None = Path(".cache/medsplit")  # data.cache_dir (None: no cache)
    duplicates: str = "error"  # data.duplicates
    seed: int = 0  # train.seed: splits, subsets and the segmentation augmentation's seed
    # the model and what it is trained and selected on
    model: str = "resnet34"  # model.name
    weights: str | None = None  # model.weights
    base_channels: int = 64  # model.base_channels
    label_smoothing: float = 0.0  # train.label_smoothing
    select_on: str = "auto"  # train.select_on

    @classmethod
    def from_config(cls, cfg: Config) -> TaskSettings:
        """The task settings of the run ``cfg`` describes."""
        d, m = cfg.data, cfg.model
        return cls(task=cfg.task, source=d.source, root=cfg.data_root(), target=d.target, img_size=d.img_size,
                   val_fraction=d.val_fraction, test_fraction=d.test_fraction, max_images=d.max_images,
                   synthetic_size=d.synthetic_size, augment=d.augment, preprocess=d.preprocess, rotation=d.rotation,
                   aug_backend=d.aug_backend, cache_dir=Path(d.cache_dir) if d.cache_dir else None,
                   duplicates=d.duplicates, seed=cfg.train.seed, model=m.name, weights=m.weights,
                   base_channels=m.base_channels, label_smoothing=cfg.train.label_smoothing,
                   select_on=cfg.train.select_on)
