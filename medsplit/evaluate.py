"""External validation: score a trained run on another dataset.

    python -m medsplit evaluate RUN_DIR --data PATH --out FILE.json [--labels CSV] [--report FILE.md]

The run's saved config rebuilds the model, its selected weights (``model.safetensors``,
loaded without unpickling) fill it, and its training-set normalisation is reused, so
the scores mean what they would have meant at test time. Every image of a folder is
scored; for a RetinaMNIST ``.npz``, its official test split. What ``--data`` may be:

* lungs: a set name, a combined source (``covid-cxr-v7+shenzhen``), or any folder with
  ``images/`` and ``masks/`` whose files share stems (no manifest needed);
* fundus: a folder with a labels CSV (``image,level``), or a plain image folder with the CSV
  elsewhere (``--labels``), or a ``.npz``.

The result holds the run's own (internal) test metric beside the external one and how far the
external one falls from it: the number a user wants before trusting a model on their site.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from medsplit.config import config_from_dict
from medsplit.data.augment import to_float
from medsplit.tasks import TaskSettings, task_class, task_model
from medsplit.train.checkpoint import load_weights
from medsplit.train.device import resolve_device
from medsplit.uncertainty import test_intervals
from medsplit.yaml_file import load_yaml


def evaluate_run(run_dir: Path, data: str, out: Path, device: str = "auto", batch_size: int = 64,
                 labels: str | None = None, report: Path | None = None) -> dict:
    """Score the run in ``run_dir`` on ``data`` and write the result JSON to ``out``.

    Args:
        run_dir: a finished medsplit run (``config.yaml``, ``model.safetensors``, ``metrics.json``).
        data: see the module docstring.
        out: the result JSON.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        batch_size: images per forward pass.
        labels: fundus only: a CSV (``image,level``, optional ``file``) for the images of the
            ``data`` folder, when the CSV is not inside it.
        report: optional Markdown file stating the external metric against the internal one.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a medsplit run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(config_file.read_text()))
    saved = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    dev = resolve_device(device, "--device {}")
    task, settings = task_class(cfg.task), TaskSettings.from_config(cfg)
    external = task.load_external(settings, data, labels)
    images, targets, ids, patients, metrics = external.images, external.targets, external.ids, external.patients, external.metrics
    table = task_model(settings, task.num_outputs(settings))
    table.load_state_dict(load_weights(run_dir))
    table.to(dev).eval()
    norm = saved.get("normalisation")
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            x = to_float(images[start : start + batch_size].to(dev), norm["mean"], norm["std"]) if norm else \
                images[start : start + batch_size].to(dev).float() / 255.0
            y = targets[start : start + batch_size].to(dev)
            out_ = table(x).float()
            metrics.update(out_, task.as_target(y), ids[start : start + batch_size])

    scored = metrics.aggregate()
    result = {"run": str(run_dir), "data": external.source, "n": len(ids), "task": cfg.task, "metrics": scored,
              "intervals": test_intervals(scored, dict(zip(ids, patients)) if patients else None, seed=cfg.train.seed),
              "comparison": compare_to_internal(cfg.task, saved.get("test"), scored)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"scored {len(ids)} images from {external.source}; metrics written to {out}")
    print(result["comparison"]["statement"])
    if report is not None:
        report = Path(report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(_markdown(result))
        print(f"report: {report}")
    return result


def headline(task: str, metrics: dict) -> tuple[str, float | None]:
    """The metric a run is judged by (test AUC for retinopathy, mean Dice for lungs): its name and value.

    Args:
        task: a task name (a key of :data:`medsplit.tasks.TASKS`).
        metrics: a metrics dict (e.g. ``metrics.json["test"]``).
    """
    return task_class(task).judged_by(metrics)


def compare_to_internal(task: str, internal: dict | None, external: dict) -> dict:
    """The external headline metric against the run's own test split: both values, the drop
    (internal minus external: positive when the model does worse outside) and one sentence.

    Args:
        task: a task name (a key of :data:`medsplit.tasks.TASKS`).
        internal: the run's ``metrics.json["test"]`` (``None`` when the run has none).
        external: the metrics just computed on the external data.
    """
    name, ext = headline(task, external)
    _, own = headline(task, internal or {})
    drop = None if own is None or ext is None else own - ext
    if ext is None:
        statement = f"external {name} is undefined on this data (e.g. a single class present)"
    elif own is None:
        statement = f"external {name} {ext:.3f}; the run has no internal test metric to compare with"
    elif drop > 0:
        statement = (f"external {name} {ext:.3f} falls {drop:.3f} below the internal test {name} {own:.3f} "
                     f"({100 * drop / own:.1f}% relative)" if own else f"external {name} {ext:.3f}, internal {own:.3f}")
    else:
        statement = f"external {name} {ext:.3f} is {-drop:.3f} above (not below) the internal test {name} {own:.3f}"
    return {"metric": name, "internal": own, "external": ext, "drop": drop, "statement": statement}


def _markdown(result: dict) -> str:
    c = result["comparison"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"# External validation of {result['run']}\n\n"
            f"Data: {result['data']} ({result['n']} images)\n\n"
            f"| | {c['metric']} |\n|---|---|\n| internal test split | {fmt(c['internal'])} |\n"
            f"| external data | {fmt(c['external'])} |\n| drop (internal - external) | {fmt(c['drop'])} |\n\n"
            f"{c['statement']}.\n")

