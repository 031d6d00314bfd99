"""NoPeek (Vepakomma et al. 2020): the client adds ``alpha * dCor(x, activation)`` to its loss."""

from __future__ import annotations

import torch

from medsplit.defences.dcor import distance_correlation
from medsplit.defences.registry import DefenceSetting, DefenceSpec


class NoPeek:
    """A :data:`medsplit.split.split_model.Regularizer` for the part that sends activations.

    Args:
        alpha: weight of the distance-correlation term (strength; 0 = off).
        input_key: name of the image among the part's inputs.
        sent_keys: the part's outputs that cross to the server (all outputs when ``None``);
            a U-Net client encoder also outputs skips that never leave the hospital.
    """

    def __init__(self, alpha: float, input_key: str = "x", sent_keys: tuple[str, ...] | None = None):
        if alpha < 0:
            raise ValueError(f"NoPeek alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.input_key = input_key
        self.sent_keys = sent_keys
        self.last_dcor: float | None = None

    def __call__(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        keys = self.sent_keys or tuple(outputs)
        z = torch.cat([outputs[k].reshape(outputs[k].shape[0], -1) for k in keys], dim=1)
        d = distance_correlation(inputs[self.input_key], z)
        self.last_dcor = float(d.detach())
        return self.alpha * d


def install(model, strength: float, setting: DefenceSetting) -> tuple[dict, NoPeek]:
    """NoPeek on the client's first part, over the tensor it sends (not the skips it keeps)."""
    hook = NoPeek(strength, sent_keys=(setting.sent_key,))
    model.regularizers[setting.part] = hook
    return {"alpha": strength}, hook


SPEC = DefenceSpec("nopeek", "alpha, weight of dCor(x, activation)", install)
