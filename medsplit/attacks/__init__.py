"""Attacks on split learning; each observes only what crosses a Channel."""

#: name -> threat model in one line
ATTACKS = {
    "fsha": "malicious server hijacks the client's feature space (Pasquini et al. 2021)",
    "inversion": "adversarial reconstruction attack (ADRA, model inversion): honest-but-curious server + one "
                 "colluding hospital trains a decoder from activations to images",
    "label-leakage": "honest-but-curious server scores the gradients it receives in label-private training (Li et al. 2022)",
    "sdar": "honest-but-curious server, no colluder: simulator, decoder and adversarial regularisation from the "
            "traffic and auxiliary data (Zhu et al. 2025)",
}

#: other names users look for -> the attack's name here
ALIASES = {"adra": "inversion", "model-inversion": "inversion"}

#: how reports title each attack
DISPLAY_NAMES = {"inversion": "ADRA (model inversion)", "fsha": "FSHA", "sdar": "SDAR", "label-leakage": "label leakage"}


def resolve_attack_names(names: list[str]) -> list[str]:
    """Names with aliases (``adra``) replaced by the attack's name; unknown names are an error."""
    resolved = [ALIASES.get(n, n) for n in names]
    check_attack_names(resolved)
    return list(dict.fromkeys(resolved))


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; valid attacks are {sorted(ATTACKS)} "
                         f"(aliases: {', '.join(f'{a} = {n}' for a, n in ALIASES.items())})")


__all__ = ["ALIASES", "ATTACKS", "DISPLAY_NAMES", "check_attack_names", "resolve_attack_names"]
