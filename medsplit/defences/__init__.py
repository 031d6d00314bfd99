"""Defences against attacks on split learning; each is a hook of SplitModel or a client-side wrapper.

``DEFENCES`` maps each name to its :class:`~medsplit.defences.registry.DefenceSpec` (installer,
meaning of the strength, where it applies). A new defence is one module of this package that
defines ``SPEC``: :func:`medsplit.plugins.discover_specs` finds it (see docs/extending.md).
"""

from medsplit.defences.dcor import bias_corrected_dcor2, distance_correlation
from medsplit.defences.detector import HijackDetector
from medsplit.defences.laplace import LaplaceMechanism
from medsplit.defences.mixing import Mixing
from medsplit.defences.nopeek import NoPeek
from medsplit.defences.proxy import ProxyAdversary
from medsplit.defences.registry import NONE, DefenceNotApplicable, DefenceSetting, DefenceSpec
from medsplit.plugins import discover_specs

#: name -> spec: "none" first, then every defence module's SPEC in module-name order
DEFENCES: dict[str, DefenceSpec] = {spec.name: spec for spec in (NONE, *discover_specs(__name__, __path__, DefenceSpec))}


def check_defence_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in DEFENCES]
    if unknown:
        raise ValueError(f"unknown defence(s) {unknown}; valid defences are {sorted(DEFENCES)}")


__all__ = ["DEFENCES", "DefenceNotApplicable", "DefenceSetting", "DefenceSpec", "HijackDetector", "LaplaceMechanism",
           "Mixing", "NoPeek", "ProxyAdversary", "bias_corrected_dcor2", "check_defence_names",
           "distance_correlation"]
