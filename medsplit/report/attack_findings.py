"""The attack report's summary: what each defence bought and cost against the undefended run,
and the few statements the issue's targets are about, all computed from the measured rows.

Rows of the same (attack, defence, strength) are averaged over seeds; nothing here is
typed in except the paper's published MNIST figures, which are labelled as such.
"""

from __future__ import annotations

import math
import statistics

from medsplit.attacks.tasks import attack_task
from medsplit.report.attack_words import defence_words

# Pasquini et al. 2021 ("Unleashing the Tiger"), NoPeek against FSHA on MNIST.
PAPER_FSHA_NOPEEK_MSE = {"without NoPeek": 0.0193, "with NoPeek": 0.0267}


def _mean(values) -> float | None:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def _by_setting(rows: list[dict], attack: str) -> dict[tuple[str, float], dict]:
    """(defence, strength) -> the mean over seeds of every numeric column, plus the seed count."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        if r.get("attack") == attack:
            groups.setdefault((r["defence"], r.get("strength", 0)), []).append(r)
    out = {}
    for key, members in groups.items():
        keys = {k for m in members for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out[key] = {k: _mean(m.get(k) for m in members) for k in keys} | {"seeds": len(members)}
    return out


#: The defence table's name for ``dcor2_unbiased`` (explained under the table).
LEAKAGE = "leakage (dCor\u00b2)"


def _nearest(v: dict, mean: bool = False) -> str:
    """The trivial baselines beside an attack's figure (empty where a row predates them)."""
    parts = []
    if mean and v.get("baseline_mse") is not None:
        parts.append(f"mean auxiliary image SSIM {v['baseline_ssim']:.3f}, MSE {v['baseline_mse']:.4f}")
    if v.get("baseline_nearest_mse") is not None:
        parts.append(f"nearest auxiliary image SSIM {v['baseline_nearest_ssim']:.3f}, MSE {v['baseline_nearest_mse']:.4f}")
    return f" ({'; '.join(parts)})" if parts else ""


def defence_table(rows: list[dict]) -> list[dict]:
    """One row per (defence, strength) of the honest-but-curious attacks: ADRA's (model
    inversion's) SSIM and MSE, SDAR's SSIM, leakage and utility, each beside its change from
    the undefended run."""
    inv = _by_setting(rows, "inversion")
    sdar = _by_setting(rows, "sdar")
    ref = next((v for (d, _), v in inv.items() if d == "none"), None)
    sdar_ref = next((v for (d, _), v in sdar.items() if d == "none"), None)
    table = []
    for (defence, strength) in list(dict.fromkeys([*inv, *sdar])):
        v, w = inv.get((defence, strength), {}), sdar.get((defence, strength), {})
        either = v or w
        row = {"defence": defence, "strength": strength, "seeds": v.get("seeds", w.get("seeds")),
               "ADRA SSIM": v.get("ssim"), "ADRA MSE": v.get("mse"), "SDAR SSIM": w.get("ssim"),
               "SDAR MSE": w.get("mse"),
               # what an attacker scores without the traffic: the mean / nearest auxiliary image
               "mean-image SSIM": either.get("baseline_ssim"), "mean-image MSE": either.get("baseline_mse"),
               "nearest-aux SSIM": either.get("baseline_nearest_ssim"),
               "nearest-aux MSE": either.get("baseline_nearest_mse"),
               LEAKAGE: v.get("dcor2_unbiased"), "utility": v.get("utility", w.get("utility"))}
        if defence != "none":
            for col, cur, base, key in (("ADRA SSIM change", v, ref, "ssim"), ("SDAR SSIM change", w, sdar_ref, "ssim"),
                                        ("utility change", v or w, ref or sdar_ref, "utility")):
                a, b = cur.get(key), (base or {}).get(key)
                row[col] = None if a is None or b is None else a - b
        table.append(row)
    return table


def findings(rows: list[dict], detectors: dict[str, dict], task: str = "lungs",
             histories: dict[str, list[dict]] | None = None) -> list[str]:
    """The summary in plain words, one short paragraph per attack, with the measured numbers the
    issue's targets ask about; runs are named in words ("FSHA, no defence, seed 0"), never by key.

    ``histories`` is accepted for callers that pass it; no sentence picks a best logged point
    (that would be selection on the held-out images): every figure is the final value.
    """
    t = attack_task(task)
    inv = _by_setting(rows, "inversion")
    paragraphs = [_adra(inv, t), _sdar(_by_setting(rows, "sdar")), _fsha(_by_setting(rows, "fsha"), t, histories or {}),
                  _label_leakage(rows), _detector(detectors), _proxy(inv)]
    return [p for p in paragraphs if p]


def _others(settings: dict, text) -> str:
    """``"DP-SGD (sigma 1) SSIM 0.501, NoPeek (alpha 1) SSIM 0.177"``: each defended setting, in order."""
    return "; ".join(f"{defence_words(d, st)} {text(v)}" for (d, st), v in sorted(settings.items()) if d != "none")


def _adra(inv: dict, t) -> str:
    base = inv.get(("none", 0))
    if not base:
        return ""
    out = (f"ADRA (model inversion, a server with a colluding hospital) without a defence: SSIM {base['ssim']:.3f} on "
           f"held-out images (1 = identical), against {base['baseline_ssim']:.3f} for the mean auxiliary image; target "
           f"utility {base['utility']:.3f}.")
    chance = t.chance_level
    if chance is not None and base.get("utility") is not None and base["utility"] < chance + 0.1:
        out += (f" The undefended target reached only {t.metric_label} {base['utility']:.3f} ({chance:g} is chance) "
                "at this scale, so the utility column cannot show what a defence costs; read the privacy columns only.")
    return out


def _sdar(sd: dict) -> str:
    s0 = sd.get(("none", 0))
    if not s0:
        return ""
    beats = "beats" if s0["mse"] < s0["baseline_mse"] else "does not beat"
    out = (f"SDAR without a defence (passive server, no colluder): SSIM {s0['ssim']:.3f}, MSE {s0['mse']:.4f} on "
           f"held-out images; the mean auxiliary image scores SSIM {s0['baseline_ssim']:.3f}, MSE "
           f"{s0['baseline_mse']:.4f}, so SDAR {beats} it on MSE{_nearest(s0)}.")
    if s0.get("mask_dice") is not None:
        out += (f" The lung masks SDAR infers (the masks never cross the channel) reach Dice {s0['mask_dice']:.3f} "
                f"against the true masks, vs {s0['mask_dice_baseline']:.3f} for the mean auxiliary mask.")
    defended = _others(sd, lambda v: f"SSIM {v['ssim']:.3f}")
    if defended:
        out += f" With a defence (undefended SSIM {s0['ssim']:.3f}): {defended}."
    return out


def _fsha(fsha: dict, t, histories: dict) -> str:
    f0 = next((v for (d, _), v in fsha.items() if d == "none"), None)
    if not f0:
        return ""
    out = [f"FSHA (a malicious server) without a defence: SSIM {f0['ssim']:.3f}, MSE {f0['mse']:.4f} after "
           f"{f0['iterations']:.0f} iterations, the final value (target: SSIM >= 0.5 at 64 px){_nearest(f0, mean=True)}."]
    if not t.labels_may_cross and f0.get("utility") is not None:  # the U-shaped split
        out.append("It runs the real U-shaped protocol: the server hijacks only the gradient it returns to the client "
                   "encoder, while the client decoder trains on the masks (which never cross) and pulls the encoder "
                   f"toward the task; the hijacked client still reached {t.metric_label} {f0['utility']:.3f}.")
    for (d, s), v in sorted((k, v) for k, v in fsha.items() if k[0] == "dpsgd"):
        eps = v.get("privacy.epsilon")
        eps_text = "n/a" if eps is None else f"{eps:.3g}"
        out.append(f"Against DP-SGD on every part (sigma {s:g}, epsilon {eps_text} per image for the trained weights, "
                   "not the activations the server sees during training): SSIM "
                   f"{v['ssim']:.3f}, MSE {v['mse']:.4f} vs {f0['ssim']:.3f}, {f0['mse']:.4f} without; Gawron and "
                   "Stubbings (2022) report that FSHA still reconstructs at any epsilon, since DP-SGD bounds what the "
                   "trained weights leak, not what the activations show.")
    paper = PAPER_FSHA_NOPEEK_MSE
    for (d, s), v in sorted((k, v) for k, v in fsha.items() if k[0] == "nopeek"):
        out.append(f"Against NoPeek (alpha {s:g}): MSE {v['mse']:.4f} vs {f0['mse']:.4f} without "
                   f"({v['mse'] / f0['mse']:.2f}x), SSIM {v['ssim']:.3f} vs {f0['ssim']:.3f}; the paper, on MNIST: "
                   f"{paper['with NoPeek']} vs {paper['without NoPeek']} "
                   f"({paper['with NoPeek'] / paper['without NoPeek']:.2f}x).")
    return " ".join(out)


def _detector(detectors: dict) -> str:
    if not detectors:
        return ""
    verdicts = []
    for run, det in sorted(detectors.items()):
        kind = "FSHA" if run.startswith("fsha/") else "honest training"
        seed = run.split("/")[-1]
        verdict = f"alarm at step {det['flagged_at_step']}" if det.get("flagged") else "no alarm"
        verdicts.append(f"on {kind} (seed {seed}) {verdict} after {det['probes']} probes, one every "
                        f"{det['probe_every']} steps")
    return "Hijack detector: " + "; ".join(verdicts) + "."


def _proxy(inv: dict) -> str:
    base = inv.get(("none", 0))
    out = []
    for (d, s), v in sorted((k, v) for k, v in inv.items() if k[0] == "proxy"):
        if v.get("privacy.proxy_mse") is not None:
            undefended = f" (undefended: {base['mse']:.4f})" if base else ""
            out.append(f"Proxy-adversary training (lambda {s:g}): the client's own proxy ended at MSE "
                       f"{v['privacy.proxy_mse']:.4f}; a fresh attacker reached MSE {v['mse']:.4f}{undefended}.")
    return " ".join(out)


def _label_leakage(rows: list[dict]) -> str:
    leak = [r for r in rows if r.get("attack") == "label-leakage"]
    if not leak:
        return ""
    norm, cosine = _mean(r.get("norm_auc") for r in leak), _mean(r.get("cosine_auc") for r in leak)
    scores = "; ".join(f"{name} AUC {value:.3f}" for name, value in (("by gradient norm", norm),
                                                                    ("by cosine to one known example", cosine))
                       if value is not None)
    return (f"Label leakage (an honest-but-curious server reading the hospital's labels off the gradients it "
            f"receives): {scores} (0.5 = guessing, 1 = every label recovered).")
