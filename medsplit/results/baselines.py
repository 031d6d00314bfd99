"""Published numbers the committed studies are compared with, each with its source.

Kept apart from the studies so that a number is written once and cited the same way on the
HTML leaderboard, the generated docs page and the README. Nothing here is measured by medsplit.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Baseline", "RETINAMNIST", "FSHA_PAPER_MNIST_MSE", "LUNG_ANCHOR", "EYEPACS_TARGET", "baselines_for"]


@dataclass(frozen=True)
class Baseline:
    """One published (or target) figure: what it is, its value per metric, where it comes from."""

    name: str
    values: dict[str, float]
    source: str
    comparable: bool = True
    """False when the figure is an anchor measured on other data or another metric."""


RETINAMNIST = (
    Baseline("MedMNIST v2 ResNet-18 (28)", {"auc": 0.717, "accuracy": 0.524},
             "Yang et al. 2023, MedMNIST v2 (Scientific Data), benchmark table, RetinaMNIST official test split"),
    Baseline("MedMNIST v2 ResNet-50 (28)", {"auc": 0.726, "accuracy": 0.528},
             "Yang et al. 2023, MedMNIST v2 (Scientific Data), benchmark table"),
    Baseline("MedMNIST v2 AutoML Vision", {"auc": 0.750, "accuracy": 0.531},
             "Yang et al. 2023, MedMNIST v2 (Scientific Data), benchmark table"),
)

#: FSHA's reconstruction error on MNIST after 10,000 iterations (Pasquini et al. 2021, CCS).
FSHA_PAPER_MNIST_MSE = Baseline("FSHA paper, MNIST, 10,000 iterations", {"mse": 0.0193},
                                "Pasquini, Ateniese and Bernaschi 2021, Unleashing the tiger (CCS)")

#: Not comparable: another data set (Montgomery+Shenzhen), a Jaccard, validation not test.
LUNG_ANCHOR = Baseline("original study's split U-Net (validation Jaccard, Montgomery+Shenzhen)", {"jaccard": 0.93},
                       "the original study (Split Learning for Healthcare, BITS Pilani 2023)", comparable=False)

#: The project's own target for EyePACS referable DR, not a published figure.
EYEPACS_TARGET = Baseline("target (project goal)", {"auc": 0.75}, "medsplit's study goal", comparable=False)


#: Results-file name prefix -> the figures its study is set beside (longest prefix wins).
BY_STUDY = {
    "results-retinamnist": RETINAMNIST,
    "results-eyepacs": (EYEPACS_TARGET,),
    "results-lungs": (LUNG_ANCHOR,),
}


def baselines_for(file_name: str) -> tuple[Baseline, ...]:
    """The published figures a protocol study's results file is set beside."""
    for prefix in sorted(BY_STUDY, key=len, reverse=True):
        if file_name.startswith(prefix):
            return BY_STUDY[prefix]
    return ()
