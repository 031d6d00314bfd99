"""Read every committed ``benchmarks/results/*.json`` into a :class:`Study`: a titled table of
rows ready to render, the published baselines beside it and the facts needed to rerun it.

Each results file says what it is by its shape, written by one benchmark script:

- ``results_protocols.py`` (``summary`` rows with a ``protocol``): one row per protocol with
  each test metric's mean +- std over seeds and the 95% t-interval of that mean;
- ``medsplit attack`` (``kind: attack``): FSHA and friends, one row per file and defence,
  with the attack's curve read from its history;
- ``codec_accuracy.py`` / ``optimizer_handover.py`` (``summary`` rows with a ``codec`` or
  ``mode``): paired differences against the reference;
- ``reproduce_check.py`` (``compared`` / ``agree``): reruns checked number by number;
- anything else with a ``rows`` list: a plain benchmark table.

Nothing is computed that the file does not hold, except the interval of a mean over seeds.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from medsplit.config import load_config
from medsplit.results.attack_studies import attack_studies
from medsplit.results.baselines import baselines_for
from medsplit.results.make_command import make_command
from medsplit.results.study import (MACHINE_OVERRIDES, STUDY_PAGES, Study, clean_command, format_seconds, portable,  # noqa: F401 (re-exported)
                                    study_page)
from medsplit.results.wan_study import is_wan, wan_study

__all__ = ["Study", "load_studies", "mean_interval", "format_seconds", "study_page", "STUDY_PAGES"]


# Two-sided 95% Student-t quantiles by degrees of freedom (n seeds - 1); kept here so the page
# needs no scipy and the numbers are reproducible by hand.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95% Student-t interval of the mean of ``values`` (seeds), ``None`` below 2 values."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    n = len(values)
    if n < 2 or n - 1 not in _T95:
        return None
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _T95[n - 1] * std / math.sqrt(n)
    return mean - half, mean + half


def _pm(summary: dict, digits: int = 3) -> str:
    if not isinstance(summary, dict) or summary.get("mean") is None:
        return "—"
    std = summary.get("std")
    if len(summary.get("values") or []) < 2:  # one seed: no spread to show
        std = None
    return f"{summary['mean']:.{digits}f} ± {std:.{digits}f}" if isinstance(std, (int, float)) else f"{summary['mean']:.{digits}f}"


def _interval(pair: Any, digits: int = 3, bounds: tuple[float, float] | None = None) -> str:
    """``low–high``; ``bounds`` clamps an interval of a bounded metric (a t-interval over two
    seeds can reach past 0 and 1)."""
    if not pair:
        return "—"
    low, high = pair
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"{low:.{digits}f}–{high:.{digits}f}"


def _config_facts(root: Path, config: str, overrides: list[str]) -> dict[str, Any]:
    """Data source, image size and epochs of a study's config with its overrides."""
    try:
        cfg = load_config(root / config, list(overrides))
    except Exception:  # a moved or renamed config: the page still renders, without these facts
        return {}
    return {"task": cfg.task, "data": cfg.data.source, "img_size": cfg.data.img_size, "epochs": cfg.train.epochs,
            "model": cfg.model.name, "cut": cfg.split.cut, "clients": cfg.split.clients, "batch": cfg.train.batch_size}


def _getting(source: str) -> str:
    """How a user gets a study's data: ``make data`` fetches RetinaMNIST; the rest are folders."""
    if source == "retinamnist":
        return "make data (downloads RetinaMNIST into datasets/), or MEDSPLIT_DATA naming a folder with retinopathy/retinamnist/"
    folders = " and ".join(f"lungs/{part}/" for part in source.split("+")) if "eyepacs" not in source else "retinopathy/eyepacs256/"
    return f"your own {folders} under the folder MEDSPLIT_DATA names (or datasets/); make data does not download it (docs/data.md)"


_METRIC_LABELS = {"auc": "AUC", "accuracy": "ACC", "dice": "Dice"}


def _metric_label(key: str) -> str:
    if "@" in key:
        metric, site = key.split("@", 1)
        return f"{_METRIC_LABELS.get(metric, metric)} {site}"
    return _METRIC_LABELS.get(key, key)


def _protocol_study(path: Path, data: dict, root: Path) -> Study:
    overrides = [o for o in data.get("overrides") or [] if not o.startswith(MACHINE_OVERRIDES)]
    facts = _config_facts(root, data.get("config", ""), overrides)
    summary = data.get("summary") or []
    metrics = [k for k in (summary[0] if summary else {}) if isinstance(summary[0][k], dict) and "mean" in summary[0][k]]
    runs = data.get("runs") or []
    recipe = f"{facts.get('data', '?')} · {facts.get('img_size', '?')} px · {facts.get('epochs', '?')} epochs"
    columns = ["protocol"]
    for m in metrics:
        columns.append(f"test {_metric_label(m)}: mean ± std [95% CI of the mean]")
    columns += ["seeds", "selected epochs", "wall time per run", "data · size · epochs", "reproduce one run (SEED=0; 1, 2 likewise)"]
    rows = []
    for s in summary:
        protocol = s.get("protocol")
        row: dict[str, Any] = {"protocol": protocol}
        for m in metrics:
            interval = mean_interval(s[m].get("values") or [])
            row[f"test {_metric_label(m)}: mean ± std [95% CI of the mean]"] = \
                _pm(s[m]) + (f" [{_interval(interval, bounds=(0.0, 1.0))}]" if interval else "")
        own = [r for r in runs if r.get("protocol") == protocol]
        row["seeds"] = ", ".join(str(x) for x in s.get("seeds") or [])
        row["selected epochs"] = ", ".join(str(r.get("selected_epoch")) for r in own) or "—"
        row["wall time per run"] = format_seconds(s.get("wall_time_s_mean"))
        row["data · size · epochs"] = recipe
        row["reproduce one run (SEED=0; 1, 2 likewise)"] = make_command(
            data.get("config", ""), [*overrides, f"split.protocol={protocol}"], root) or "—"
        rows.append(row)
    baselines = []
    for b in baselines_for(path.name):
        line = {"protocol": f"published: {b.name}" if b.comparable else f"for reference: {b.name}"}
        for m in metrics:
            if m in b.values:
                line[f"test {_metric_label(m)}: mean ± std [95% CI of the mean]"] = f"{b.values[m]:.3f}"
        extra = {k: v for k, v in b.values.items() if k not in metrics}
        if extra:  # a figure on another metric (the lung anchor's Jaccard): named beside the baseline
            line["protocol"] += ": " + ", ".join(f"{k} {v:.2f}" for k, v in extra.items())
        line["source"] = b.source
        baselines.append(line)
    intervals = [r for r in runs if r.get("intervals")]
    notes = []
    if any(len(s.get("seeds") or []) == 2 for s in summary):
        notes.append("With 2 seeds the 95% t-interval of the mean is wide (t = 12.7) and is clipped to the metric's range 0-1.")
    if intervals:
        first = metrics[0] if metrics else ""
        lows = [r["intervals"][first.split("@")[0]] for r in intervals if first.split("@")[0] in r["intervals"]]
        if lows:
            notes.append(f"Per-run 95% patient-bootstrap intervals of test {_metric_label(first)}: "
                         + "; ".join(f"{r['protocol']} seed {r['seed']} {_interval((i['low'], i['high']))} "
                                     f"({i.get('n_patients', '?')} patients)"
                                     for r, i in zip(intervals, lows)) + ".")
    command = clean_command(data.get("command"))
    facts_out = {"command": command or "—", "config": f"{data.get('config')} {' '.join(overrides)}".strip(),
                 "data": str(facts.get("data", "?")), "getting the data": _getting(str(facts.get("data", ""))), "image size": f"{facts.get('img_size', '?')} px",
                 "epochs": str(facts.get("epochs", "?")), "model": f"{facts.get('model', '?')}, CUT {facts.get('cut', '?')}, "
                                                                   f"{facts.get('clients', '?')} hospitals, batch {facts.get('batch', '?')}",
                 "threads per run": str(data.get("threads", "?"))}
    return Study(path.name, f"{_title(path.stem)}", "protocols", columns, rows, facts_out, baselines, notes, study_page(path.name))


def _title(stem: str) -> str:
    named = {
        "results-retinamnist": "RetinaMNIST, 5 grades, 10 epochs",
        "results-retinamnist-20ep": "RetinaMNIST, 5 grades, 20 epochs (the recipe validation chose)",
        "results-retinamnist-20ep-ls01": "RetinaMNIST, 20 epochs, label smoothing 0.1 (rejected on validation)",
        "results-lungs-sites": "Two-site lungs (covid-cxr-v7 + shenzhen), 64 px, 3 epochs",
        "results-lungs-sites-v1": "Two-site lungs, SplitFed V1 (SFL-V1), 64 px, 3 epochs",
        "results-lungs-sites-96px": "Two-site lungs, 96 px, 25 epochs (the CPU default recipe)",
        "results-eyepacs": "EyePACS referable DR, recipe 1 (did not learn)",
        "results-eyepacs-long": "EyePACS referable DR, recipe 5 (30 epochs)",
        "results-eyepacs-partial": "EyePACS recipe 1, relay, stopped after 9 epochs",
        "results-eyepacs-recipes": "EyePACS recipes 2-4 (centralised pilots)",
    }
    return named.get(stem, stem)


def _paired_change(summary: dict, reference: bool) -> str:
    """The paired difference to the reference, in points: its 95% interval, else mean ± std."""
    if reference:
        return "reference"
    ci = summary.get("diff_points_ci95")
    if ci:
        return f"{ci[0]:+.2f} to {ci[1]:+.2f}"
    mean, std = summary.get("diff_points_mean"), summary.get("diff_points_std")
    if isinstance(mean, (int, float)):
        return f"{mean:+.2f} ± {std:.2f} (no interval recorded)" if isinstance(std, (int, float)) else f"{mean:+.2f}"
    return "—"


def _paired_study(path: Path, data: dict, root: Path) -> Study:
    key = "codec" if "codec" in (data.get("summary") or [{}])[0] else "mode"
    metric = data.get("metric", "metric")
    runs = data.get("runs") or []
    overrides = list(data.get("overrides") or [])
    facts = _config_facts(root, data.get("config", ""), overrides)
    metric = _metric_label(metric)
    columns = [key, f"test {metric} (mean ± std)", f"{metric} 95% CI of the mean", f"change vs {data.get('reference')} (points, 95% CI)",
               "MB per epoch", "seeds", "selected epochs", "wall time per run", "data · size · epochs"]
    rows = []
    for s in data.get("summary") or []:
        own = [r for r in runs if r.get(key) == s.get(key)]
        walls = [r["wall_time_s"] for r in own if isinstance(r.get("wall_time_s"), (int, float))]
        rows.append({
            key: s.get(key),
            f"test {metric} (mean ± std)": _pm(s),
            f"{metric} 95% CI of the mean": _interval(mean_interval(s.get("values") or []), bounds=(0.0, 1.0)),
            f"change vs {data.get('reference')} (points, 95% CI)": _paired_change(s, s.get(key) == data.get("reference")),
            "MB per epoch": f"{(s.get('mb_per_epoch') or s.get('weights_mb_per_epoch') or 0):.2f}",
            "seeds": ", ".join(str(x) for x in s.get("seeds") or []),
            "selected epochs": ", ".join(str(r.get("selected_epoch")) for r in own) or "—",
            "wall time per run": format_seconds(sum(walls) / len(walls)) if walls else "—",
            "data · size · epochs": f"{facts.get('data', '?')} · {facts.get('img_size', '?')} px · {facts.get('epochs', '?')} epochs",
        })
    script = "codec_accuracy.py" if key == "codec" else "optimizer_handover.py"
    values = ",".join(str(s.get(key)) for s in data.get("summary") or [])
    seeds = ",".join(str(x) for x in (data.get("summary") or [{}])[0].get("seeds") or [])
    words = [f".venv/bin/python benchmarks/{script}", f"--config {data.get('config')}"]
    if data.get("tag"):
        words.append(f"--tag {data['tag']}")
    words += [f"--{key}s {values}", f"--seeds {seeds}"]
    if data.get("jobs"):
        words.append(f"--jobs {data['jobs']}")
    if data.get("threads_per_job"):
        words.append(f"--threads {data['threads_per_job']}")
    words += overrides
    facts_out = {"command": " ".join(words), "data": str(facts.get("data", "?")), "image size": f"{facts.get('img_size', '?')} px",
                 "epochs": str(facts.get("epochs", "?"))}
    title = (f"Codec accuracy: {data.get('task')} {data.get('tag', '')}".strip() if key == "codec"
             else f"Optimiser hand-over: {data.get('task')} {data.get('tag', '')}".strip())
    return Study(path.name, title, "paired", columns, rows, facts_out, [], list(data.get("verdicts") or []), study_page(path.name))


def _reproduce_rows(files: list[tuple[Path, dict]]) -> Study:
    rows = [{"comparison": p.name, "committed": Path(str(d.get("committed", ""))).name, "numbers compared": d.get("compared"),
             "agree": d.get("agree"), "tolerance": d.get("tolerance")} for p, d in files]
    return Study(", ".join(p.name for p, _ in files), "Reruns on the final code against the committed results", "reproduce",
                 ["comparison", "committed", "numbers compared", "agree", "tolerance"], rows,
                 {"command": ".venv/bin/python benchmarks/reproduce_check.py COMMITTED.json RERUN.json"}, [], [], "studies/reproducibility.md")


_SCALAR = (int, float, str, bool)


def _recipes_study(path: Path, data: dict) -> Study:
    """EyePACS recipes 2-4: one row per recipe with its per-epoch validation AUC."""
    rows = []
    for r in data.get("recipes") or []:
        epochs = r.get("epochs") or []
        rows.append({"recipe": r.get("recipe"), "config": f"{r.get('config')} {r.get('overrides') or ''}".strip(),
                     "epochs run": len(epochs),
                     "validation AUC per epoch": ", ".join(f"{e['val_auc']:.3f}" for e in epochs if isinstance(e.get("val_auc"), float)),
                     "last training loss": f"{epochs[-1]['train_loss']:.3f}" if epochs and isinstance(epochs[-1].get("train_loss"), float) else "—",
                     "wall time": format_seconds(sum(e.get("seconds") or 0 for e in epochs))})
    return Study(path.name, "EyePACS recipes 2-4 (centralised pilots, stopped at chance)", "benchmark",
                 ["recipe", "config", "epochs run", "validation AUC per epoch", "last training loss", "wall time"], rows,
                 {"what": str(data.get("what", ""))}, [], [], study_page(path.name))


def _benchmark_study(path: Path, data: dict) -> Study:
    """Any other file: its top-level scalars as facts and its ``rows`` (or nested row lists) as tables."""
    facts = {k: _short(v) for k, v in data.items() if isinstance(v, _SCALAR) and len(str(v)) <= 160}
    rows: list[dict[str, Any]] = []
    source = data.get("rows") or []
    if not source:
        for key, value in data.items():
            if isinstance(value, dict):  # e.g. transport_flare-pingpong: {"simulator": [...], "poc": [...]}
                for name, inner in value.items():
                    if isinstance(inner, list):
                        source += [{key: name, **r} for r in inner if isinstance(r, dict)]
            elif isinstance(value, list) and value and isinstance(value[0], dict) and key not in ("rows",):
                source += [r for r in value if isinstance(r, dict)]
    for r in source:
        rows.append({k: _short(v) for k, v in r.items() if isinstance(v, _SCALAR)})
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    return Study(path.name, path.stem, "benchmark", columns[:7], rows, facts, [], [], study_page(path.name))


def _short(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return portable(value) if isinstance(value, str) else value


def load_studies(results_dir: Path | str, root: Path | str = ".") -> list[Study]:
    """Every ``*.json`` of ``results_dir`` as studies, in the order the page shows them.

    Args:
        results_dir: ``benchmarks/results``.
        root: the repository root (config paths in the files are relative to it).
    """
    results_dir, root = Path(results_dir), Path(root)
    files = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable JSON results file ({e})") from e
        files.append((path, data))
    protocols, attacks, paired, reproduce, other, wan = [], [], [], [], [], []
    for path, data in files:
        summary = data.get("summary") if isinstance(data.get("summary"), list) else []
        if summary and "protocol" in summary[0]:
            protocols.append(_protocol_study(path, data, root))
        elif data.get("kind") == "attack":
            attacks.append((path, data))
        elif summary and ("codec" in summary[0] or "mode" in summary[0]):
            paired.append(_paired_study(path, data, root))
        elif "compared" in data and "agree" in data:
            reproduce.append((path, data))
        elif "recipes" in data:
            other.append(_recipes_study(path, data))
        elif is_wan(data):
            wan.append((path, data))
        else:
            other.append(_benchmark_study(path, data))
    order = ["results-retinamnist-20ep.json", "results-retinamnist.json", "results-retinamnist-20ep-ls01.json",
             "results-lungs-sites-96px.json", "results-lungs-sites.json", "results-lungs-sites-v1.json",
             "results-eyepacs-long.json", "results-eyepacs.json"]
    protocols.sort(key=lambda s: (order.index(s.file) if s.file in order else len(order), s.file))
    studies = protocols
    studies += attack_studies(attacks)
    studies += paired
    if reproduce:
        studies.append(_reproduce_rows(reproduce))
    return studies + ([wan_study(wan)] if wan else []) + other


def slug(text: str) -> str:
    """An anchor for a study title (shared by the HTML and the Markdown page)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
