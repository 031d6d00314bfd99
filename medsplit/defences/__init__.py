"""Defences against attacks on split learning; each is a hook of the split engine or a client-side wrapper."""

from medsplit.defences.dcor import bias_corrected_dcor2, distance_correlation
from medsplit.defences.detector import HijackDetector
from medsplit.defences.laplace import LaplaceMechanism
from medsplit.defences.mixing import Mixing
from medsplit.defences.nopeek import NoPeek
from medsplit.defences.proxy import ProxyAdversary

#: name -> what its strength parameter means
DEFENCES = {
    "none": "no defence",
    "nopeek": "alpha, weight of dCor(x, activation)",
    "laplace": "Laplace scale b (C fixed; epsilon per release = C / b)",
    "mixing": "k, samples per mixture",
    "proxy": "lambda, weight of the proxy's negated reconstruction loss",
    "dpsgd": "noise multiplier sigma",
}


class DefenceNotApplicable(ValueError):
    """A defence that cannot apply to the chosen task or cut; the message says why."""


def check_defence_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in DEFENCES]
    if unknown:
        raise ValueError(f"unknown defence(s) {unknown}; valid defences are {sorted(DEFENCES)}")


__all__ = ["DEFENCES", "DefenceNotApplicable", "HijackDetector", "LaplaceMechanism", "Mixing", "NoPeek",
           "ProxyAdversary", "bias_corrected_dcor2", "check_defence_names",
           "distance_correlation"]
