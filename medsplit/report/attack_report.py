"""The attack x defence report: threat models, reconstruction grids, attack curves,
the privacy-utility frontier and a table of every number, plus a JSON beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from medsplit.attacks import ATTACKS, DISPLAY_NAMES
from medsplit.attacks.tasks import attack_task
from medsplit.report.attack_findings import LEAKAGE, defence_table, findings
from medsplit.report.attack_words import defence_words, run_words, setting_labels
from medsplit.report.tables import without_empty_columns, without_empty_rows
from medsplit.report.figures import line_plot, reconstruction_grid, scatter_frontier
from medsplit.report.html import Report

THREAT_MODELS = {
    "fsha": "Malicious server (Feature-Space Hijacking, Pasquini et al. 2021), inside the real protocol. It returns "
            "to the client's first part the gradient of a WGAN-GP adversarial loss instead of the task gradient, and "
            "reconstructs with the inverse of a pilot encoder trained on auxiliary images (the patient-disjoint half "
            "of the training split of the same source, never the victims' images). What else reaches the client "
            "encoder depends on the split (see above). It sees exactly what crosses the channel (noisy or mixed "
            "activations under those defences).",
    "inversion": "Adversarial reconstruction attack (ADRA, model inversion; `--attacks adra`): honest-but-curious "
                 "server colluding with one hospital. The target is trained honestly with the defence; the colluding "
                 "hospital hands the server (image, activation) pairs, the activation being what crossed the channel "
                 "for it. A fresh decoder is trained on those pairs and inverts the held-out victims' activations as "
                 "observed on the channel.",
    "sdar": "SDAR (Zhu et al., NDSS 2025): honest-but-curious server, no colluder. From its auxiliary labelled images, "
            "its own trained parts and the activations the private hospitals sent (unpaired), it trains a simulator "
            "of the client part (and, in the U-shape, of the client decoder) whose features a discriminator cannot "
            "tell from the real ones, a label-conditioned decoder regularised by an image discriminator, and infers "
            "the labels (masks in the U-shape) it conditions on. Fresh attacker on the defended target, judged on the "
            "held-out victims; trained after the target (offline), a simplification of the paper's online attack.",
    "label-leakage": "Honest-but-curious server in label-private (U-shaped) training of the fundus classifier: the "
                     "hospital keeps the head and the labels; the server scores the gradient rows it receives by norm "
                     "and by cosine to one example of known label (Li et al. 2022).",
}

#: what each privacy mechanism's numbers cover, printed beside the per-run notes
GUARANTEES = (
    "Laplace noise: per-sample L1 clip to C/2, Laplace(b) per coordinate, replace-one-image relation, pure DP, unit "
    "one image. At inference (client in eval mode, each row its own image's) epsilon = C/b per release: what the "
    "inversion attacker sees. In training the client's BatchNorm couples the batch's rows, so one batch release is "
    "epsilon = B*C/b (column privacy.epsilon_per_training_batch), and a whole training of T steps is epsilon = "
    "T*B*C/b (column privacy.epsilon_whole_training): the weights carry one image into every later release. "
    "Gradients are never noised: in the U-shape the gradients the client decoder returns to the server (computed "
    "with the masks) cross in the clear.",
    "DP-SGD on every part (client encoder, server parts, client decoder): opacus, per-sample clipping with each of "
    "the J parts clipped to C/sqrt(J) (all parts together to C) and Gaussian noise of std sigma*C on every part, one "
    "RDP accountant for the joint mechanism, delta 1e-5, add/remove one training image, Poisson-sampled batches (the "
    "sampling the accountant assumes). Every BatchNorm is replaced by GroupNorm, so each sample's clipped gradient "
    "depends on that sample alone, within a batch and across steps (tested). privacy.epsilon bounds what the trained "
    "weights of all parts say about one image; privacy.epsilon_patient about one patient (group privacy over the "
    "most images one patient has, at the same delta). It does NOT cover the activations the server sees during "
    "training (nor the gradients that cross): only activation noise protects those.",
    "Randomness: noise comes from torch's generators seeded with the run's published seed: reproducible, not "
    "cryptographically secure. dp_secure_mode=true (profile option) draws DP-SGD's noise from a CSPRNG as opacus' "
    "secure mode does.",
    "Baselines: baseline_mse/ssim is the mean auxiliary image as every victim's reconstruction; "
    "baseline_nearest_mse/ssim the auxiliary image nearest each victim (chosen by looking at the victim: an optimistic "
    "ceiling of guessing from the attacker's own data). Every attack figure is its final value, not its best logged "
    "point on the held-out images.",
)

def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_attack_report(results: dict, out_dir: Path) -> Path:
    """Write ``attack-<task>-<profile>.html`` and ``.json`` into ``out_dir``; returns the HTML path."""
    task, profile = results["task"], results["profile"]
    stem = f"attack-{task}-{profile}"
    rows = [{k: _clean(v) for k, v in r.items()} for r in results["rows"]]
    rep = Report(f"Attacks and defences: {task}",
                 subtitle=f"profile {profile}, data {results['data_source']}, device {results['device']}")
    if profile != "full":
        rep.banner(f"Profile {profile!r}: reduced scale (image size, iterations, steps); numbers are indicative, "
                   "not the paper-scale result.", "warning")
    rep.section("Summary", "Computed from the rows under 'Every number' (means over seeds).")
    histories = {k: v["history"] for k, v in results["extras"].items() if v.get("history")}
    for sentence in findings(rows, _detectors(results), task, histories):
        rep.text(sentence)
    table = without_empty_columns([{**r, "defence": defence_words(r["defence"])} for r in defence_table(rows)])
    if table:
        rep.table(table, caption="Each defence against fresh attackers (ADRA: model inversion with a colluder; SDAR: "
                                 "passive, no colluder): SSIM lower is more private; changes are against the "
                                 "undefended run.", float_fmt="{:.4g}")
    rep.section("Threat models", f"The attacks run on the {task} task, and who the attacker is in each.")
    rep.text(f"Split: {attack_task(task).split_note}")
    run_attacks = list(dict.fromkeys(r["attack"] for r in rows))
    for name, text in threat_models(run_attacks):
        rep.text(f"{name}: {text}")
    rep.section("What each privacy number covers")
    for text in GUARANTEES:
        rep.text(text)
    notes = _privacy_notes(results)
    if notes:
        rep.table(notes, caption="What each defence's privacy number covers in these runs, as the runs state it")
    rep.text("Defences are judged by a fresh attacker trained against the defended client, never by the proxy a "
             "defence trained against. "
             f"The {LEAKAGE} column measures how much of the held-out images is in what crossed the channel: the "
             "bias-corrected squared distance correlation (Szekely and Rizzo 2014; dcor2_unbiased under 'Every "
             "number'), about 0 when they are independent. The 'dcor' column under 'Every number' is the "
             "V-statistic NoPeek trains with, which tends to 1 in high dimension even for pure noise, so it ranks "
             "defences but does not measure leakage.")
    originals = results["originals"].numpy()
    # the built-ins in their usual order, then any other attack that returned reconstructions
    for attack in dict.fromkeys(("inversion", "sdar", "fsha", *run_attacks)):
        recon = {k.split("/", 1)[1]: v["recon"].numpy() for k, v in results["extras"].items()
                 if k.startswith(attack + "/") and v.get("recon") is not None}
        if not recon:
            continue
        labels = setting_labels(list(recon))
        recon = {labels[k]: v for k, v in recon.items()}
        title = DISPLAY_NAMES.get(attack, attack)
        rep.section(f"{title}: reconstructions", "First row: held-out originals; then one row per defence and strength.")
        n = min(originals.shape[0], next(iter(recon.values())).shape[0])
        rep.figure(reconstruction_grid(originals[:n], {k: v[:n] for k, v in recon.items()}))
        curves = {k.split("/", 1)[1]: v["history"] for k, v in results["extras"].items()
                  if k.startswith(attack + "/") and v.get("history")}
        curves = {setting_labels(list(curves))[k]: v for k, v in curves.items()}
        if not curves:
            continue
        xs = sorted({h["iteration"] for hs in curves.values() for h in hs})

        def at_each_x(hs: list[dict], key: str) -> list:
            return [next((h[key] for h in hs if h["iteration"] == x), None) for x in xs]

        for metric in ("ssim", "mse"):
            series = {}
            for name, hs in curves.items():
                series[name] = at_each_x(hs, metric)
                # FSHA's ceiling: the attacker's autoencoder on the same images through its own pilot
                if any(f"pilot_{metric}" in h for h in hs):
                    series[f"{name}: pilot ceiling"] = at_each_x(hs, f"pilot_{metric}")
            rep.figure(line_plot(xs, series, "iteration", metric, title=f"{title}: {metric} on held-out images"))
            if any(k.endswith("pilot ceiling") for k in series):
                rep.text(f"'pilot ceiling': f~^-1(f~(x)), the attacker's own autoencoder on the same held-out images, "
                         f"the {metric} the attack reaches once the client's features match the pilot's.")
    inv = [r for r in rows if r["attack"] == "inversion"]
    if inv:
        rep.section("Privacy-utility frontier", "Utility (Dice or AUC on held-out images) against the fresh ADRA "
                    "(model inversion) attacker's SSIM, one colour per defence, strengths annotated.")
        rep.figure(scatter_frontier(inv, "ssim", "utility", "defence", "lower", "higher", annotate_key="strength"))
    detectors = _detectors(results)
    if detectors:
        rep.section("Hijack detection", "Fake rounds with randomised targets; alarm when the returned gradient ignores them.")
        rep.table([{"run": run_words(k), **v} for k, v in detectors.items()])
    rep.section("Every number", "Every measured number, one table per attack, each quantity under the name the "
                                "JSON beside this report uses.")
    for attack in run_attacks:
        rep.table(*_quantities_by_run([r for r in rows if r["attack"] == attack]),
                  caption=f"{DISPLAY_NAMES.get(attack, attack)}: one column per defence, strength and seed",
                  float_fmt="{:.4g}")
    if results["skipped"]:
        rep.table(results["skipped"], caption="not run, and why")
    rep.kv(results["profile_config"], caption="profile")
    html = rep.write(Path(out_dir) / f"{stem}.html")
    headline = {}
    for r in rows:
        if r["attack"] in ("inversion", "fsha", "sdar") and r["defence"] == "none" and "ssim" in r:
            headline[f"{r['attack']} SSIM (no defence)"] = r["ssim"]
        if r["attack"] == "label-leakage":
            headline["label leakage norm AUC"] = r.get("norm_auc")
    record = {"kind": "attack", "task": task, "profile": profile, "device": results["device"], "headline": headline, "rows": rows,
              "skipped": results["skipped"], "detectors": detectors, "seconds": results["seconds"],
              "trivial_baselines": results.get("trivial_baselines"),
              "histories": {k: v["history"] for k, v in results["extras"].items() if v.get("history")}, "profile_config": results["profile_config"]}
    html.with_suffix(".json").write_text(json.dumps(record, indent=1, default=_json_default))
    return html


def _quantities_by_run(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """``(table rows, columns)``: one row per quantity, one column per run of one attack. Runs as
    columns keep the table narrow: an attack has a few runs but up to twenty quantities, whose
    long names would make a run-per-row table several screens wide."""
    keys = [f"{r['defence']}/{r.get('strength', 0)}/{r.get('seed', 0)}" for r in rows]
    labels = setting_labels(keys)
    columns = [labels[k] for k in keys]
    quantities = list(dict.fromkeys(q for r in rows for q in r if q not in ("attack", "defence", "strength", "seed")))
    table = [{"quantity": q, **{col: r.get(q) for col, r in zip(columns, rows)}} for q in quantities]
    return without_empty_rows(table), ["quantity", *columns]


def threat_models(attacks: list[str]) -> list[tuple[str, str]]:
    """``(display name, threat model)`` of each attack that ran, in the report's usual order; a
    plug-in attack states its threat model on its spec."""
    ordered = [*(a for a in THREAT_MODELS if a in attacks), *(a for a in attacks if a not in THREAT_MODELS)]
    out = []
    for name in ordered:
        text = THREAT_MODELS.get(name) or (ATTACKS[name].description if name in ATTACKS else None)
        if text:
            out.append((DISPLAY_NAMES.get(name, name), text))
    return out


#: A defence's privacy fact -> how the notes table words it (facts not listed keep their key).
_NOTE_WORDS = {"mechanism": "mechanism", "neighbouring": "neighbouring datasets", "scope": "epsilon",
               "covers": "the epsilon covers", "not_covered": "it does not cover", "normalisation": "normalisation",
               "sampling": "sampling"}


def _privacy_notes(results: dict) -> list[dict]:
    """One row per (defence, strength): the attacks it was run against, and what its privacy number
    covers in one paragraph ("the epsilon covers ...; it does not cover ..."), from the first seed.
    One text column instead of one per fact: the facts differ per defence, so separate columns are
    mostly empty and each narrow one wraps into a tower of lines."""
    by_setting: dict[tuple[str, str], dict] = {}
    for key, extra in results["extras"].items():
        attack, defence, strength, _ = key.split("/")
        if not extra.get("privacy_notes"):
            continue
        entry = by_setting.setdefault((defence, strength), {"attacks": [], "notes": extra["privacy_notes"]})
        name = DISPLAY_NAMES.get(attack, attack)
        if name not in entry["attacks"]:
            entry["attacks"].append(name)
    return [{"defence": defence_words(defence, strength), "attacks": ", ".join(entry["attacks"]),
             "what its privacy number covers": "; ".join(f"{_NOTE_WORDS.get(k, k.replace('_', ' '))}: {v}"
                                                         for k, v in entry["notes"].items())}
            for (defence, strength), entry in by_setting.items()]


def _detectors(results: dict) -> dict[str, dict]:
    return {k: v["detector"] for k, v in results["extras"].items() if v.get("detector")}


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float):
        return None
    return str(obj)
