"""Attacks on split learning; each observes only what crosses a Channel.

``ATTACKS`` maps each name to its :class:`~medsplit.attacks.registry.AttackSpec` (runner,
threat model, display name, default defences). A new attack is one module defining ``SPEC``
and one entry in the tuple below; the order is the order of ``--attacks``' default.
"""

from medsplit.attacks import fsha_protocol, inversion, label_leakage, sdar
from medsplit.attacks.registry import AttackContext, AttackSpec

#: name -> spec
ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec for spec in (fsha_protocol.SPEC, inversion.SPEC, label_leakage.SPEC, sdar.SPEC)
}

#: other names users look for -> the attack's name here
ALIASES = {alias: spec.name for spec in ATTACKS.values() for alias in spec.aliases}

#: how reports title each attack
DISPLAY_NAMES = {name: spec.display_name for name, spec in ATTACKS.items()}


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


__all__ = ["ALIASES", "ATTACKS", "DISPLAY_NAMES", "AttackContext", "AttackSpec", "check_attack_names",
           "resolve_attack_names"]
