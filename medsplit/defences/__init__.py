"""Defences against attacks on split learning; each is a hook of the split engine or a client-side wrapper.

``DEFENCES`` maps each name to its :class:`~medsplit.defences.registry.DefenceSpec` (installer,
meaning of the strength, where it applies). A new defence is one module defining ``SPEC`` and
one entry in the tuple below; the order is the order of help texts.
"""

from medsplit.defences import dpsgd, laplace, mixing, nopeek, proxy
from medsplit.defences.dcor import bias_corrected_dcor2, distance_correlation
from medsplit.defences.detector import HijackDetector
from medsplit.defences.laplace import LaplaceMechanism
from medsplit.defences.mixing import Mixing
from medsplit.defences.nopeek import NoPeek
from medsplit.defences.proxy import ProxyAdversary
from medsplit.defences.registry import NONE, DefenceNotApplicable, DefenceSetting, DefenceSpec

#: name -> spec, in the order help texts list them
DEFENCES: dict[str, DefenceSpec] = {
    spec.name: spec for spec in (NONE, nopeek.SPEC, laplace.SPEC, mixing.SPEC, proxy.SPEC, dpsgd.SPEC)
}


def check_defence_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in DEFENCES]
    if unknown:
        raise ValueError(f"unknown defence(s) {unknown}; valid defences are {sorted(DEFENCES)}")


__all__ = ["DEFENCES", "DefenceNotApplicable", "DefenceSetting", "DefenceSpec", "HijackDetector", "LaplaceMechanism",
           "Mixing", "NoPeek", "ProxyAdversary", "bias_corrected_dcor2", "check_defence_names",
           "distance_correlation"]
