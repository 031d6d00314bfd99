"""The attack report's names in words: a defence and its strength ("DP-SGD (sigma 1)"), a run
key ("fsha/none/0/0" -> "FSHA, no defence, seed 0"), figure labels of settings."""

from __future__ import annotations

from typing import Any

from medsplit.attacks import DISPLAY_NAMES

__all__ = ["defence_words", "run_words", "setting_labels"]

#: Defence name -> (how a reader calls it, the symbol of its strength).
DEFENCE_WORDS = {
    "none": ("no defence", ""),
    "dpsgd": ("DP-SGD", "sigma"),
    "laplace": ("Laplace noise", "b"),
    "nopeek": ("NoPeek", "alpha"),
    "mixing": ("activation mixing", "k"),
    "proxy": ("proxy-adversary training", "lambda"),
}


def defence_words(defence: str, strength: Any = None) -> str:
    """``("dpsgd", 1.0)`` -> ``"DP-SGD (sigma 1)"``; ``("none", 0)`` -> ``"no defence"``; a plug-in
    defence keeps its own name."""
    name, symbol = DEFENCE_WORDS.get(defence, (defence, "strength"))
    if defence == "none" or strength is None:
        return name
    try:
        value = f"{float(strength):g}"
    except (TypeError, ValueError):
        value = str(strength)
    return f"{name} ({symbol} {value})"


def run_words(key: str) -> str:
    """``"fsha/none/0/0"`` (attack/defence/strength/seed) -> ``"FSHA, no defence, seed 0"``."""
    parts = key.split("/")
    if len(parts) != 4:
        return key
    attack, defence, strength, seed = parts
    return f"{DISPLAY_NAMES.get(attack, attack)}, {defence_words(defence, strength)}, seed {seed}"


def setting_labels(keys: list[str]) -> dict[str, str]:
    """Figure labels of ``defence/strength/seed`` keys: ``"nopeek/1.0/0"`` -> ``"NoPeek (alpha 1)"``,
    with ", seed N" only when the keys hold more than one seed."""
    parts = {k: k.split("/") for k in keys}
    seeds = {p[2] for p in parts.values() if len(p) == 3}
    out = {}
    for key, p in parts.items():
        if len(p) != 3:
            out[key] = key
            continue
        out[key] = defence_words(p[0], p[1]) + (f", seed {p[2]}" if len(seeds) > 1 else "")
    return out
