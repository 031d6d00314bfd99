"""Attacks on split learning; each observes only what crosses a Channel."""

#: name -> threat model in one line
ATTACKS = {
    "fsha": "malicious server hijacks the client's feature space (Pasquini et al. 2021)",
    "inversion": "honest-but-curious server + one colluding hospital trains a decoder from activations to images",
    "label-leakage": "honest-but-curious server scores the gradients it receives in label-private training (Li et al. 2022)",
}


def check_attack_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; valid attacks are {sorted(ATTACKS)}")


__all__ = ["ATTACKS", "check_attack_names"]
