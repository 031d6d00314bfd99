"""Attack results files (``medsplit attack``, ``kind: attack``) as leaderboard studies: FSHA at the
paper's length (curves, the paper's MNIST figure beside it), and the reconstruction attacks (ADRA,
SDAR) with their trivial baselines (the mean auxiliary image, the nearest auxiliary image)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsplit.results.baselines import FSHA_PAPER_MNIST_MSE
from medsplit.results.study import Study, clean_command, format_seconds, history

__all__ = ["attack_studies"]


def attack_studies(files: list[tuple[Path, dict]]) -> list[Study]:
    """FSHA at the paper's length (the paper-cpu profile) as one study; the reduced-profile files
    (ADRA, SDAR, and FSHA's 400-iteration rows) as another."""
    fsha = [(p, d) for p, d in files if any(r.get("attack") == "fsha" for r in d.get("rows") or [])
            and str(d.get("profile", "")).startswith("paper-cpu")]
    other = [(p, d) for p, d in files if (p, d) not in fsha]
    return ([_attack_study(fsha)] if fsha else []) + ([_reconstruction_study(other)] if other else [])


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "—"


def _pilot_batch_norm(fsha: dict) -> bool:
    """Whether a file's pilot ended in BatchNorm: files written before ``fsha.pilot_batch_norm``
    existed (2026-12-03) have no such field and ran the free pilot."""
    return bool(fsha.get("pilot_batch_norm", False))


def _pilot_setting(fsha: dict) -> str:
    """The ``--set`` that reruns a file's pilot, always spelled out: the default changed on
    2026-12-07 (free pilot before, matched pilot since), so a command without it reruns the
    other attack for one of the two."""
    return f"--set fsha.pilot_batch_norm={'true' if _pilot_batch_norm(fsha) else 'false'}"


def _before_issue_27(data: dict) -> bool:
    """Whether a file predates the change of 2026-12-07 (issue 27) that made FSHA score the client
    part in eval mode (before, scoring ran it in training mode and moved the BatchNorm running
    statistics its Dice then read), put DP-SGD on every part (before, the client encoder only) and
    added the trivial baselines to every row: a file without those baselines predates it."""
    rows = data.get("rows") or []
    return "trivial_baselines" not in data and not any("baseline_mse" in r for r in rows)


def _defence(row: dict, data: dict) -> str:
    name = str(row.get("defence"))
    label = name if not row.get("strength") else f"{name} ({row.get('strength')})"
    if name == "dpsgd" and _before_issue_27(data):
        label += ", client encoder only"
    return label


def _command(path: Path, data: dict) -> str:
    """The recorded command (with the pilot it ran, if it did not say) or one derived from the file."""
    recorded = clean_command(data.get("command"))
    if not recorded:
        return _derived_attack_command(path, data)
    if "fsha.pilot_batch_norm" in recorded:
        return recorded
    return f"{recorded} {_pilot_setting((data.get('profile_config') or {}).get('fsha') or {})}"


def _fsha_privacy(row: dict, data: dict) -> str:
    """The row's epsilon and what it covers; before issue 27 DP-SGD covered the client encoder only,
    and across steps that bound was nominal (the other parts trained without DP)."""
    if _before_issue_27(data) and isinstance(row.get("privacy.epsilon"), (int, float)):
        return f"epsilon {row['privacy.epsilon']:.3g} per image (client encoder only; nominal, not a guarantee)"
    return _privacy(row)


def _attack_rows(path: Path, data: dict) -> list[dict[str, Any]]:
    profile = data.get("profile_config") or {}
    fsha = profile.get("fsha") or {}
    variant = "control: label sharing (FSHA's threat model)" if "label-sharing" in str(data.get("task")) else "U-shaped lungs"
    if _pilot_batch_norm(fsha):
        variant += ", pilot ends in BatchNorm"
    rows = []
    for r in data.get("rows") or []:
        curve = [h for h in history(data) if isinstance(h.get("mse"), (int, float))]
        lowest = min(curve, key=lambda h: h["mse"]) if curve else None
        start = curve[0] if curve else None
        rows.append({
            "file": path.name,
            "variant": variant,
            "defence": _defence(r, data),
            "iterations": r.get("iterations"),
            "MSE at iteration 0 (untrained attacker)": f"{start['mse']:.4f}" if start else "—",
            "lowest MSE (iteration)": f"{lowest['mse']:.4f} ({lowest['iteration']})" if lowest else "—",
            "final MSE / SSIM": f"{_number(r.get('mse'), 4)} / {_number(r.get('ssim'), 3)}",
            "mean image / nearest auxiliary image MSE": f"{_number(r.get('baseline_mse'), 4)} / "
                                                        f"{_number(r.get('baseline_nearest_mse'), 4)}",
            "hijacked client's Dice": f"{r['utility']:.3f}" if isinstance(r.get("utility"), (int, float)) else "—",
            "privacy": _fsha_privacy(r, data),
            "client scored in": "training mode" if _before_issue_27(data) else "eval mode",  # training: before 2026-12-07
            "attacker pilot MSE (ceiling)": f"{r['pilot_mse']:.4f}" if isinstance(r.get("pilot_mse"), (int, float)) else "—",
            "data · size": f"{str(data.get('task', '?')).split('-')[0]} (covid-cxr-v7) · {profile.get('img_size', '?')} px",
            "wall time": format_seconds(r.get("seconds")),
            "command": _command(path, data),
        })
    return rows


def _derived_attack_command(path: Path, data: dict) -> str:
    """The attack command for files that did not record one, from their task, profile and rows."""
    fsha = (data.get("profile_config") or {}).get("fsha") or {}
    defences = ",".join(dict.fromkeys(str(r.get("defence")) for r in data.get("rows") or []))
    named = str(data.get("profile"))
    base = max((p for p in ("tiny", "reduced", "paper-cpu", "full") if named.startswith(p)), key=len, default=named)
    words = [".venv/bin/python -m medsplit attack", f"--task {data.get('task')}", f"--profile {base}",
             "--attacks fsha", f"--defences {defences}"]
    words.append(_pilot_setting(fsha))
    iterations = fsha.get("iterations")
    if iterations and iterations != 10000:
        words.append(f"--set fsha.iterations={iterations}")
    if named != base:
        words.append(f"--set name={named}")
    return " ".join(words)


def _attack_study(files: list[tuple[Path, dict]]) -> Study:
    rows = [row for path, data in files for row in _attack_rows(path, data)]
    rows.sort(key=lambda r: (-(r["iterations"] or 0), r["variant"], str(r["defence"])))  # paper length first
    # one page wide at 1400 px: MSE and SSIM share a column, data and size are one fact below
    columns = ["variant", "defence", "iterations", "MSE at iteration 0 (untrained attacker)", "lowest MSE (iteration)",
               "final MSE / SSIM", "mean image / nearest auxiliary image MSE", "attacker pilot MSE (ceiling)", "hijacked client's Dice",
               "privacy", "client scored in", "wall time"]  # "data · size" is one fact: every row is the same
    b = FSHA_PAPER_MNIST_MSE
    baselines = [{"variant": f"published: {b.name}", "final MSE / SSIM": f"{b.values['mse']:.4f} / —", "source": b.source}]
    facts = {"profile": "paper-cpu: 10,000 iterations, batch 64, Adam 1e-5 (client, pilot, decoder), 1e-4 (critic), "
                        "gradient penalty 500; classic U-Net width 8 cut after its first block",
             "make target": 'make attacks PROFILE=paper-cpu ARGS="--attacks fsha --defences none"'}
    sizes = sorted({row["data · size"] for row in rows})
    facts["data · size"] = ", ".join(sizes)
    for row in rows:
        facts[f"command, {row['file']}"] = row["command"]
    notes = ["MSE: lower is a better attack; SSIM: higher is a better attack. One seed per row. "
             "The paper's figure is on MNIST, not chest X-rays.",
             "The pilot ends in BatchNorm, as the client's block does, by default since 2026-12-07 (the stronger "
             "attack); rows without it ran the free pilot (--set fsha.pilot_batch_norm=false).",
             "Rows scored with the client in training mode predate 2026-12-07: scoring then moved the client's "
             "BatchNorm running statistics, which its Dice read; they carry no trivial baselines, and their DP-SGD "
             "covered the client encoder only (since then it trains every part)."]
    return Study(", ".join(p.name for p, _ in files), "FSHA at the paper's length (lungs, paper-cpu profile)", "attack", columns,
                 rows, facts, baselines, notes, "studies/fsha.md")




_ATTACK_NAMES = {"inversion": "ADRA (inversion, colluding hospital)", "sdar": "SDAR (server)",
                 "fsha": "FSHA (malicious server)"}


def _privacy(row: dict) -> str:
    if isinstance(row.get("privacy.epsilon"), (int, float)):
        text = f"epsilon {row['privacy.epsilon']:.3g} per image"
        if isinstance(row.get("privacy.epsilon_patient"), (int, float)):
            text += f", {row['privacy.epsilon_patient']:.3g} per patient (k = {row.get('privacy.images_per_patient')})"
        elif "privacy.epsilon_patient" in row:  # stored as null: group privacy over k images gives no finite bound
            text += f", no finite bound per patient (k = {row.get('privacy.images_per_patient')})"
        return text + " (weights of every part)"
    if isinstance(row.get("privacy.epsilon_whole_training"), (int, float)):
        return f"epsilon {row['privacy.epsilon_whole_training']:.3g} over the whole training (Laplace)"
    return ""


def _reconstruction_study(files: list[tuple[Path, dict]]) -> Study:
    rows = []
    for path, data in files:
        for r in data.get("rows") or []:
            rows.append({
                "file": path.name, "task": data.get("task"), "attack": _ATTACK_NAMES.get(r.get("attack"), str(r.get("attack"))),
                "defence": r.get("defence") if not r.get("strength") else f"{r.get('defence')} ({r.get('strength')})",
                "SSIM": _number(r.get("ssim"), 3), "MSE": _number(r.get("mse"), 4),
                "mean image SSIM / MSE": f"{_number(r.get('baseline_ssim'), 3)} / {_number(r.get('baseline_mse'), 4)}",
                "nearest auxiliary image SSIM / MSE": f"{_number(r.get('baseline_nearest_ssim'), 3)} / "
                                                      f"{_number(r.get('baseline_nearest_mse'), 4)}",
                "utility": _number(r.get("utility"), 3), "privacy": _privacy(r),
                "data · size": f"{data.get('task')} · {(data.get('profile_config') or {}).get('img_size', '?')} px",
                "command": clean_command(data.get("command")) or f".venv/bin/python -m medsplit attack --task {data.get('task')} "
                           f"--profile reduced --attacks {'fsha' if r.get('attack') == 'fsha' else 'adra,sdar'} "
                           f"--defences {r.get('defence')} --set name={data.get('profile')}",
            })
    rows.sort(key=lambda r: (str(r["task"]), r["attack"], str(r["defence"])))
    columns = ["task", "attack", "defence", "SSIM", "MSE", "mean image SSIM / MSE", "nearest auxiliary image SSIM / MSE",
               "utility", "privacy", "data · size"]
    facts = {"profile": "reduced: 64 px, 200 target steps, batch 16, seed 0; the target trains on the client's private "
                        "images only, the auxiliary images are the attacker's (published threat models)"}
    for row in rows:
        facts.setdefault(f"command, {row['file']}", row["command"])
    notes = ["SSIM: higher is a better attack; MSE: lower is a better attack. An attack that does not beat the nearest "
             "auxiliary image has learned nothing about the victim beyond what the attacker already holds. One seed per row.",
             "FSHA rows: 400 iterations from scratch inside the real protocol, the pilot ending in BatchNorm (the default "
             "since 2026-12-07), the client scored in eval mode; utility is the hijacked client's own score."]
    return Study(", ".join(p.name for p, _ in files), "Reconstruction attacks, published threat models (reduced profile)",
                 "attack", columns, rows, facts, [], notes, "studies/attacks-reduced.md")
