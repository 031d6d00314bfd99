"""MALM-style k-way mixing of activations and labels (after Mixup-based defences of split learning).

Each sample's sent activation is replaced by a convex combination of itself (weight
``w_0``, the largest) and ``k - 1`` other samples of the batch; the labels the server
receives are mixed with the same weights (as one-hot probabilities), so the server can
still train on soft targets. The same permutation and weights are used for activations and
labels: the activation transform draws them, the label transform reuses them.

Applies where the server sees both activations and labels (a two-part classification
split). It cannot apply to a U-shaped split (the U-Net): the server's output returns to the
client decoder, which would need the *un-mixed* features, and the masks never cross.
"""

from __future__ import annotations

import torch

from medsplit.defences.registry import DefenceNotApplicable, DefenceSetting, DefenceSpec

#: why mixing cannot apply to a U-shaped split (the error and the report's reason)
U_SHAPED_REFUSAL = ("mixing cannot apply to a U-shaped split: the server's output returns to the client decoder, "
                    "which needs un-mixed features, and the masks never cross")


class Mixing:
    """k-way mixing shared between an activation transform and a label transform.

    Args:
        k: samples per mixture (1 = off).
        num_classes: to one-hot integer labels.
        generator: optional RNG, on the CPU: the permutation and weights are a few numbers
            per batch, drawn there and moved to the activations' device.
    """

    def __init__(self, k: int, num_classes: int, generator: torch.Generator | None = None):
        if k < 1:
            raise ValueError(f"mixing k must be >= 1, got {k}")
        self.k = k
        self.num_classes = num_classes
        self.generator = generator
        self._perm: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None

    def _draw(self, n: int, device: torch.device) -> None:
        # perm[:, 0] is the sample itself; the others are distinct random rotations of the batch.
        # A batch of n < k samples (the last of an inference pass) mixes all n of them.
        shifts = torch.randperm(max(n - 1, 1), generator=self.generator)[: min(self.k, n) - 1] + 1
        base = torch.arange(n)
        self._perm = torch.stack([base] + [(base + s) % n for s in shifts.tolist()], dim=1).to(device)
        # Dirichlet(1, ..., 1) weights (normalised Exp(1) draws), sorted so the sample's own is largest.
        w = -torch.log(torch.rand(n, self._perm.shape[1], generator=self.generator).clamp_min(1e-12))
        w = w / w.sum(1, keepdim=True)
        self._weights = w.sort(dim=1, descending=True).values.to(device)

    def _mix(self, t: torch.Tensor) -> torch.Tensor:
        assert self._perm is not None and self._weights is not None
        w = self._weights.to(t.dtype)
        return sum(w[:, j].view(-1, *([1] * (t.ndim - 1))) * t[self._perm[:, j]] for j in range(self._perm.shape[1]))

    def activations(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Send transform for the client part: draws new weights and mixes every sent tensor."""
        if self.k == 1:
            return tensors
        n = next(iter(tensors.values())).shape[0]
        self._draw(n, next(iter(tensors.values())).device)
        return {k: self._mix(t) for k, t in tensors.items()}

    def labels(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Send transform for the labels: one-hot, then mixed with the activations' weights."""
        out = {}
        for k, y in tensors.items():
            soft = torch.nn.functional.one_hot(y.long(), self.num_classes).float() if not y.is_floating_point() else y
            out[k] = soft if self.k == 1 else self._mix(soft)
        return out


def install(model, strength: float, setting: DefenceSetting) -> tuple[dict, Mixing]:
    """Mix what the client's first part sends and, with the same weights, the labels the data owner sends."""
    if len(model.chain) > 2:  # the task may allow it, the cut does not: the output returns to the client
        raise DefenceNotApplicable(U_SHAPED_REFUSAL)
    hook = Mixing(int(strength), setting.num_classes, setting.generator)
    model.send_transforms[setting.part] = hook.activations
    model.send_transforms["data"] = hook.labels
    return {"k": int(strength)}, hook


SPEC = DefenceSpec("mixing", "k, samples per mixture", install, needs_labels_crossing=True, refusal=U_SHAPED_REFUSAL)
