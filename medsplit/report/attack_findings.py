"""The attack report's summary: what each defence bought and cost against the undefended run,
and the few statements the issue's targets are about, all computed from the measured rows.

Rows of the same (attack, defence, strength) are averaged over seeds; nothing here is
typed in except the paper's published MNIST figures, which are labelled as such.
"""

from __future__ import annotations

import math
import statistics

from medsplit.attacks.tasks import attack_task

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
        row = {"defence": defence, "strength": strength, "seeds": v.get("seeds", w.get("seeds")),
               "ADRA SSIM": v.get("ssim"), "ADRA MSE": v.get("mse"), "SDAR SSIM": w.get("ssim"),
               "SDAR MSE": w.get("mse"), "dcor2_unbiased": v.get("dcor2_unbiased"),
               "utility": v.get("utility", w.get("utility"))}
        if defence != "none":
            for col, cur, base, key in (("ADRA SSIM change", v, ref, "ssim"), ("SDAR SSIM change", w, sdar_ref, "ssim"),
                                        ("utility change", v or w, ref or sdar_ref, "utility")):
                a, b = cur.get(key), (base or {}).get(key)
                row[col] = None if a is None or b is None else a - b
        table.append(row)
    return table


def findings(rows: list[dict], detectors: dict[str, dict], task: str = "lungs",
             histories: dict[str, list[dict]] | None = None) -> list[str]:
    """Plain sentences with the measured numbers the issue's targets ask about.

    ``histories`` (run key -> logged iterations) adds where an undefended FSHA peaked, since at
    the reduced scale's learning rates its quality can fall again after the peak.
    """
    out = []
    t = attack_task(task)
    inv = _by_setting(rows, "inversion")
    base = inv.get(("none", 0))
    if base:
        out.append(f"ADRA (model inversion) without a defence: SSIM {base['ssim']:.3f} on held-out images, against "
                   f"{base['baseline_ssim']:.3f} for the mean auxiliary image; target utility {base['utility']:.3f}.")
        chance = t.chance_level
        if chance is not None and base.get("utility") is not None and base["utility"] < chance + 0.1:
            out.append(f"The undefended target reached only {t.metric_label} {base['utility']:.3f} ({chance:g} is "
                       "chance) at this scale, so the utility column cannot show what a defence costs; read the "
                       "privacy columns only.")
    sd = _by_setting(rows, "sdar")
    s0 = sd.get(("none", 0))
    if s0:
        beats = "beats" if s0["mse"] < s0["baseline_mse"] else "does not beat"
        out.append(f"SDAR without a defence (passive server, no colluder): SSIM {s0['ssim']:.3f}, MSE {s0['mse']:.4f} "
                   f"on held-out images; the mean auxiliary image scores SSIM {s0['baseline_ssim']:.3f}, MSE "
                   f"{s0['baseline_mse']:.4f}, so SDAR {beats} it on MSE.")
        if s0.get("mask_dice") is not None:
            out.append(f"SDAR's inferred lung masks (the masks never cross the channel): Dice {s0['mask_dice']:.3f} "
                       f"against the true masks, vs {s0['mask_dice_baseline']:.3f} for the mean auxiliary mask.")
        for (d, s), v in sorted((k, v) for k, v in sd.items() if k[0] != "none"):
            out.append(f"SDAR against {d} ({s:g}): SSIM {v['ssim']:.3f} (undefended {s0['ssim']:.3f}), MSE "
                       f"{v['mse']:.4f}.")
    fsha = _by_setting(rows, "fsha")
    f0 = next((v for (d, _), v in fsha.items() if d == "none"), None)
    if f0:
        out.append(f"FSHA without a defence: SSIM {f0['ssim']:.3f}, MSE {f0['mse']:.4f} after {f0['iterations']:.0f} "
                   f"iterations (target: SSIM >= 0.5 at 64 px).")
        for run, hist in sorted((histories or {}).items()):
            if run.startswith("fsha/none/") and hist:
                peak = max(hist, key=lambda h: h["ssim"])
                out.append(f"Its best logged point ({run}): SSIM {peak['ssim']:.3f} at iteration {peak['iteration']}; "
                           "the attacker cannot pick that point without the private images.")
        if not t.labels_may_cross and f0.get("utility") is not None:  # the U-shaped split
            out.append("The lung FSHA runs the real U-shaped protocol: the server hijacks only the gradient it returns "
                       "to the client encoder, while the client decoder trains on the masks (which never cross) and "
                       f"its skip gradient pulls the encoder toward the task; the hijacked client still reached "
                       f"{t.metric_label} {f0['utility']:.3f}.")
        for (d, s), v in sorted((k, v) for k, v in fsha.items() if k[0] == "dpsgd"):
            eps = v.get("privacy.epsilon")
            eps_text = "n/a" if eps is None else f"{eps:.3g}"
            out.append(f"FSHA against a DP-SGD client (sigma {s:g}, epsilon {eps_text} for the client's first part): "
                       f"SSIM {v['ssim']:.3f}, MSE {v['mse']:.4f} vs {f0['ssim']:.3f}, {f0['mse']:.4f} without. "
                       "Gawron and Stubbings (2022) report that FSHA still reconstructs at any epsilon: DP-SGD bounds "
                       "what the client's parameters leak, not what its activations show.")
        paper = PAPER_FSHA_NOPEEK_MSE
        for (d, s), v in sorted((k, v) for k, v in fsha.items() if k[0] == "nopeek"):
            out.append(f"FSHA against NoPeek (alpha {s:g}): MSE {v['mse']:.4f} vs {f0['mse']:.4f} without "
                       f"({v['mse'] / f0['mse']:.2f}x), SSIM {v['ssim']:.3f} vs {f0['ssim']:.3f}. The paper, on MNIST: "
                       f"{paper['with NoPeek']} vs {paper['without NoPeek']} "
                       f"({paper['with NoPeek'] / paper['without NoPeek']:.2f}x).")
    for run, det in sorted(detectors.items()):
        kind = "FSHA" if run.startswith("fsha/") else "honest training"
        verdict = (f"alarm at step {det['flagged_at_step']}" if det.get("flagged") else "no alarm")
        out.append(f"Hijack detector on {kind} ({run}): {verdict} after {det['probes']} probes, one every "
                   f"{det['probe_every']} steps.")
    for (d, s), v in sorted((k, v) for k, v in inv.items() if k[0] == "proxy"):
        if v.get("privacy.proxy_mse") is not None:
            undefended = f" (undefended: {base['mse']:.4f})" if base else ""
            out.append(f"Proxy-adversary training (lambda {s:g}): the client's own proxy ended at MSE "
                       f"{v['privacy.proxy_mse']:.4f}; a fresh attacker reached MSE {v['mse']:.4f}{undefended}.")
    return out
