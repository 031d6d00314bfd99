"""Plain-language readings of a run record, for readers who do not know the jargon: what the
cut means for this run's model, what quadratic kappa is, which unit HD95 is in, and whether
a classifier's decisions are degenerate (one predicted class for every image)."""

from __future__ import annotations

import torch

from medsplit.config import Config
from medsplit.models import build_model
from medsplit.tasks import TASKS, TaskSettings

__all__ = ["KAPPA_WORDS", "cut_list", "cut_words", "degenerate_classifier", "hd95_unit"]

KAPPA_WORDS = ("Quadratic kappa (Cohen's kappa with quadratic weights) measures how far the predicted classes agree "
               "with the true ones beyond what chance agreement would give: 0 = no better than chance, 1 = perfect; "
               "with ordered grades, a prediction two grades off costs four times one grade off.")


_GENERAL_CUT = ("CUT=N says where the model is split between the hospital and the server: the hospital runs the "
                "model's first layers, up to cut point N, on its own images, and the server receives only what "
                "comes out of those layers (the activations), never the images; a larger N keeps more layers, and "
                "more computation, at the hospital.")


def _stage_names(record: dict):
    """The names of the model's stages and its plan for the record's cut, built on the meta
    device from the record's config (no memory, no weights); ``None`` when that cannot be done."""
    task = TASKS.get(str(record.get("task")))
    config = record.get("config") or {}
    if task is None or not isinstance(config.get("model"), dict):
        return None
    cfg = Config()
    cfg.task = str(record["task"])
    for section in ("data", "model"):
        for key, value in (config.get(section) or {}).items():
            if hasattr(getattr(cfg, section), key):
                setattr(getattr(cfg, section), key, value)
    settings = TaskSettings.from_config(cfg)
    with torch.device("meta"):
        table = build_model(cfg.model.name, **task.model_kwargs(settings, task.num_outputs(settings)))
    return [s.name for s in table.stages], table.plan(record["cut"])


def _span(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"


def _who_runs_what(record: dict) -> str | None:
    """``"(resnet34, 10 stages): the hospital runs conv1 to maxpool; then the server runs layer1 to fc."``
    for the record's model and cut; ``None`` when the model cannot be built from the record."""
    try:
        built = _stage_names(record)
    except Exception:  # an old or foreign record: the general meaning still helps
        built = None
    if not built:
        return None
    names, plan = built
    model = ((record.get("config") or {}).get("model") or {}).get("name", "the model")
    runs: list[tuple[str, list[str]]] = []  # (owner, stages), neighbouring parts of one owner merged
    start = 0
    for part in plan:
        owner = "the hospital" if part.role == "client" else "the server"
        if runs and runs[-1][0] == owner:
            runs[-1][1].extend(names[start:part.stop])
        else:
            runs.append((owner, list(names[start:part.stop])))
        start = part.stop
    steps = "; then ".join(f"{owner} runs {_span(stages)}" for owner, stages in runs)
    shape = (" The hospital also runs the last layers, so the labels (masks) never leave it (U-shaped split)."
             if len(runs) > 2 and runs[-1][0] == "the hospital" else "")
    return f"({model}, {len(names)} stages): {steps}.{shape}"


def cut_words(record: dict) -> str | None:
    """``"CUT=3 says where ...: Here (resnet34, 10 stages): the hospital runs conv1 to maxpool; then the server
    runs layer1 to fc."``; ``None`` for an unsplit run. Falls back to the general meaning when the model
    cannot be built."""
    cut = record.get("cut")
    if cut is None:
        return None
    text = _GENERAL_CUT.replace("CUT=N", f"CUT={cut}", 1).replace("cut point N", f"cut point {cut}")
    here = _who_runs_what(record)
    return f"{text} Here {here}" if here else text


def cut_list(task: str, config: dict, cuts: list[int]) -> list[str]:
    """The general meaning of CUT=N, then one line per cut of a sweep: ``"CUT=1 (resnet34, ...): ..."``."""
    lines = [_GENERAL_CUT]
    for cut in cuts:
        here = _who_runs_what({"task": task, "config": config, "cut": cut})
        if here:
            lines.append(f"CUT={cut} {here}")
    return lines


def hd95_unit(test: dict) -> tuple[str, str]:
    """``(unit, sentence)`` for the HD95 of segmentation metrics: millimetres where the pixel spacing
    was known (``test["spacing"]``, from NIfTI headers: one number, or ``{"min", "max"}`` where images
    differ), pixels of the model's input otherwise."""
    spacing = test.get("spacing")
    if isinstance(spacing, dict) and all(isinstance(spacing.get(k), (int, float)) and spacing[k] > 0 for k in ("min", "max")):
        known = f"{spacing['min']:g} to {spacing['max']:g} mm per pixel"
    elif isinstance(spacing, (int, float)) and spacing > 0:
        known = f"{spacing:g} mm per pixel"
    else:
        known = None
    if known:
        return "mm", (f"HD95 is in millimetres: the pixel spacing was known ({known} at the model's "
                      "input size, from the images' NIfTI headers).")
    return "pixels", ("HD95 is in pixels of the model's input images, not in millimetres: these images carry no "
                      "pixel spacing (PNG and JPEG files do not; NIfTI headers do).")


def _class_name(test: dict, index: int) -> str:
    names = test.get("class_names") or []
    name = str(names[index]) if index < len(names) else f"class {index}"
    if len(names) == 2:
        return f"{'negative' if index == 0 else 'positive'} ({name})"
    return name


def degenerate_classifier(test: dict) -> str | None:
    """A warning when the classifier's decisions are degenerate: it predicts one class for every
    test image, or (binary) it finds no positive (sensitivity 0) or no negative (specificity 0).
    ``None`` when its decisions use more than one class and both rates are above 0."""
    confusion = test.get("confusion")
    if not confusion:
        return None
    predicted = [sum(row[j] for row in confusion) for j in range(len(confusion[0]))]
    n = sum(predicted)
    used = [j for j, count in enumerate(predicted) if count]
    auc = test.get("auc")
    ranks = (f" Its AUC ({auc:.3f}) only says how it ranks images by score; at its decision threshold it "
             "tells no image apart." if isinstance(auc, (int, float)) else "")
    if len(used) == 1:
        return (f"Degenerate classifier: it predicts {_class_name(test, used[0])} for every one of the {n} test "
                f"images.{ranks} Accuracy, sensitivity and specificity here describe a constant answer.")
    if len(confusion) == 2:
        if test.get("sensitivity") == 0:
            return (f"Degenerate classifier: sensitivity 0, it flags none of the {sum(confusion[1])} positive test "
                    "images.")
        if test.get("specificity") == 0:
            return (f"Degenerate classifier: specificity 0, it flags every one of the {sum(confusion[0])} negative "
                    "test images.")
    return None
