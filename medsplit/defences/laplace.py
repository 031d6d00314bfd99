"""Clipped Laplace mechanism on the activations a client sends (a ``send_transforms`` hook).

Mechanism: every sample's activation ``a`` (all sent tensors of one sample, flattened) is
scaled down so that ``||a||_1 <= C / 2``, then i.i.d. Laplace(0, b) noise is added to every
coordinate. Neighbouring relation: two releases that differ in *one sample's image* (any
image replaced by any other).

Which epsilon holds where:

* **At inference** (the client part in eval mode: every row is a function of its own image)
  two clipped activations differ by at most ``C`` in L1, so one sample's release is
  ``epsilon = C / b``-DP (pure DP, delta = 0). This is what the inversion attacker sees.
* **In training** the client's BatchNorm normalises with the batch's statistics, so every
  row of a batch depends on every image of it (issue 14 measured the *other* rows moving by
  2.2-2.6 C when one image was replaced): the per-row bound does not hold. What holds: each of the ``B`` clipped rows
  still moves by at most ``C``, so the batch release has L1 sensitivity ``B * C`` and is
  ``epsilon = B * C / b``-DP for an image in that batch.

* **Over a whole training** of ``T`` steps: the clip bounds every released row whatever the
  weights, and the weights carry one training image into every later release (of any image),
  so by basic composition one training image's total is ``epsilon = T * B * C / b``, over all
  ``T`` steps, not over the epochs in which the image itself was drawn.

This protects the activation release only; it says nothing about the gradients the client
sends or receives: in the U-shape the gradients the client decoder returns to the server
(computed with the masks) cross without noise. The unit is one image (a patient with several
images: multiply by their number). Noise comes from the run's seeded generator: reproducible,
not cryptographically secure.
"""

from __future__ import annotations

import torch

from medsplit.defences.registry import DefenceSetting, DefenceSpec


class LaplaceMechanism:
    """Clip per-sample L1 norm to ``sensitivity / 2``, add Laplace noise of ``scale``.

    Args:
        sensitivity: ``C``, the L1 sensitivity bound (the clip radius is ``C / 2``).
        scale: ``b``, the Laplace scale; larger is more private.
        generator: optional RNG for reproducible noise. Noise for tensors on the generator's
            device is drawn from it directly; for tensors elsewhere (a CPU generator, CUDA
            activations) from a generator on their device seeded once from it, so the noise is
            drawn where it is added and CPU runs keep the generator's exact stream.
    """

    def __init__(self, sensitivity: float, scale: float, generator: torch.Generator | None = None):
        if sensitivity <= 0 or scale <= 0:
            raise ValueError(f"Laplace mechanism needs sensitivity > 0 and scale > 0, got {sensitivity}, {scale}")
        self.sensitivity = float(sensitivity)
        self.scale = float(scale)
        self.generator = generator
        self._device_generators: dict[torch.device, torch.Generator] = {}

    @property
    def epsilon(self) -> float:
        """Per-release epsilon for one sample at inference (delta = 0); see :meth:`training_epsilon`."""
        return self.sensitivity / self.scale

    @property
    def clip_radius(self) -> float:
        return self.sensitivity / 2

    def clip(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scale each sample so the L1 norm over all its sent tensors is at most ``C / 2``."""
        n = next(iter(tensors.values())).shape[0]
        norm = sum(t.reshape(n, -1).abs().sum(1) for t in tensors.values())
        factor = torch.clamp(self.clip_radius / (norm + 1e-12), max=1.0)
        return {k: t * factor.view(-1, *([1] * (t.ndim - 1))) for k, t in tensors.items()}

    def _generator_for(self, device: torch.device) -> torch.Generator | None:
        if self.generator is None or self.generator.device == device:
            return self.generator
        if device not in self._device_generators:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator, device=self.generator.device))
            self._device_generators[device] = torch.Generator(device).manual_seed(seed)
        return self._device_generators[device]

    def __call__(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        clipped = self.clip(tensors)
        out = {}
        for k, t in clipped.items():
            # Laplace(0, b) = b * (E1 - E2) with E1, E2 ~ Exp(1): works with a torch.Generator.
            g = self._generator_for(t.device)
            u = torch.rand(2, *t.shape, generator=g, device=t.device, dtype=t.dtype).clamp_min(1e-12)
            noise = self.scale * (torch.log(u[0]) - torch.log(u[1]))
            out[k] = t + noise
        return out

    def training_epsilon(self, batch_size: int) -> float:
        """epsilon of one training-time batch release for an image in the batch: BatchNorm in
        training mode lets one image move all ``batch_size`` clipped rows, each by <= C."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return batch_size * self.sensitivity / self.scale

    def whole_training_epsilon(self, batch_size: int, steps: int) -> float:
        """epsilon of a whole training of ``steps`` batch releases for one training image: the
        weights carry the image into every later release, each bounded by ``B * C / b``."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return steps * self.training_epsilon(batch_size)

    def describe(self, batch_size: int, steps: int, images_per_patient: int = 1) -> dict:
        """The mechanism's guarantees: per release at inference, per batch and per whole training.

        Args:
            batch_size: the training batch size ``B`` (the training-time bound grows with it).
            steps: the number ``T`` of training steps (batch releases).
            images_per_patient: the most training images of one patient ``k``: pure DP's group
                privacy makes a patient's whole-training epsilon ``k * T * B * C / b``.
        """
        per_batch, whole = self.training_epsilon(batch_size), self.whole_training_epsilon(batch_size, steps)
        return {"mechanism": "per-sample L1 clip to C/2 + Laplace(b) per coordinate", "C": self.sensitivity,
                "b": self.scale, "delta": 0.0,
                "epsilon_per_release_inference": self.epsilon,
                "epsilon_per_training_batch": per_batch,
                "epsilon_whole_training": whole,
                "epsilon_whole_training_patient": images_per_patient * whole,
                "neighbouring": "one sample's image replaced by any other",
                "scope": f"one image; inference (eval mode, rows independent): epsilon C/b = {self.epsilon:.4g} per "
                         f"release; training (BatchNorm couples the batch's rows): epsilon B*C/b = {per_batch:.4g} per "
                         f"batch release (B = {batch_size}); whole training of T = {steps} steps: epsilon T*B*C/b = "
                         f"{whole:.4g} (the weights carry an image into every later release); gradients are not "
                         "noised (in the U-shape the client decoder's gradients to the server cross in the clear); "
                         f"one patient (at most {images_per_patient} images): k times each; "
                         "noise from the run's seeded generator: reproducible, not cryptographically secure"}


def install(model, strength: float, setting: DefenceSetting) -> tuple[dict, LaplaceMechanism]:
    """Clip and noise what the client's first part sends; the facts are :meth:`LaplaceMechanism.describe`'s."""
    hook = LaplaceMechanism(setting.laplace_c, strength, setting.generator)
    model.send_transforms[setting.part] = hook
    return hook.describe(setting.batch_size, max(1, setting.train_steps), setting.images_per_patient), hook


SPEC = DefenceSpec("laplace", "Laplace scale b (C fixed; epsilon C/b per inference release, B*C/b per training "
                   "batch, T*B*C/b per whole training)", install)
