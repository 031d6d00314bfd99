"""External validation: score a trained run on another dataset.

    python -m medsplit evaluate RUN_DIR --data PATH --out FILE.json

The run's saved config rebuilds the model, its selected weights (``model.safetensors``,
loaded without unpickling) fill it, and its training-set normalisation is reused, so
the scores mean what they would have meant at test time. Every image of a folder is
scored; for a RetinaMNIST ``.npz``, its official test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from medsplit.config import config_from_dict
from medsplit.data.augment import to_float
from medsplit.train.checkpoint import load_weights
from medsplit.train.loop import resolve_device
from medsplit.train.tasks import task_model


def evaluate_run(run_dir: Path, data: str, out: Path, device: str = "auto", batch_size: int = 64) -> dict:
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a medsplit run directory (no config.yaml)")
    cfg = config_from_dict(yaml.safe_load(config_file.read_text()))
    saved = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    dev = resolve_device(device)
    if cfg.task == "retinopathy":
        images, targets, ids, patients, source, metrics = _retinopathy(cfg, data)
        num_classes = metrics.num_classes
    else:
        images, targets, ids, patients, source, metrics = _lungs(cfg, data)
        num_classes = 1
    table = task_model(cfg, num_classes)
    table.load_state_dict(load_weights(run_dir))
    table.to(dev).eval()
    norm = saved.get("normalisation")
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = to_float(images[start : start + batch_size].to(dev), norm["mean"], norm["std"]) if norm else \
                images[start : start + batch_size].to(dev).float() / 255.0
            y = targets[start : start + batch_size].to(dev)
            out_ = table(x).float()
            if cfg.task == "retinopathy":
                metrics.update(out_, y, ids[start : start + batch_size])
            else:
                metrics.update(out_, y.float(), ids[start : start + batch_size])
    from medsplit.uncertainty import test_intervals

    scores = metrics.aggregate()
    result = {"run": str(run_dir), "data": source, "n": len(ids), "task": cfg.task, "metrics": scores,
              "intervals": test_intervals(scores, dict(zip(ids, patients)) if patients else None, seed=cfg.train.seed)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"scored {len(ids)} images from {source}; metrics written to {out}")
    return result


def _retinopathy(cfg, data: str):
    from medsplit.data.retinopathy import TARGETS, load_for_evaluation
    from medsplit.metrics import ClassificationMetrics

    spec = TARGETS[cfg.data.target]
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else None
    images, source = load_for_evaluation(data, cfg.data_root(), cfg.data.target, cfg.data.img_size, cache)
    return images.images, images.labels, images.ids, images.patients, source, ClassificationMetrics(spec.num_classes, list(spec.class_names))


def _lungs(cfg, data: str):
    from medsplit.data.lungs import load_lungs
    from medsplit.metrics import SegmentationMetrics

    d = load_lungs(data, cfg.data_root(), img_size=cfg.data.img_size, seed=cfg.train.seed,
                   cache_dir=Path(cfg.data.cache_dir) if cfg.data.cache_dir else None)
    if d.synthetic:
        raise ValueError("external validation needs real data: pass a lung folder with --data, not the synthetic source")
    parts = (d.train, d.val, d.test)
    images = torch.cat([p.images for p in parts])
    masks = torch.cat([p.masks for p in parts])
    ids = [i for p in parts for i in p.ids]
    patients = [q for p in parts for q in (p.patients or p.ids)]
    return images, masks, ids, patients, d.source, SegmentationMetrics()
