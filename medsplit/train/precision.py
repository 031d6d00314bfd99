"""Where forward passes run under bf16 autocast: one decision for every place that trains or evaluates.

The runner decides the precision once (:func:`compute_dtype`, from ``train.amp`` and
``train.cpu_amp``) and every place that trains or evaluates in that process (the in-process
loop, the party processes, the FLARE sites) runs ``autocast_for`` that dtype, so a run and its
separate-process twin compute in the same precision. Losses stay float32 under autocast
on both device types (torch's autocast lists), and activations that cross the cut travel as
bf16, halving their bytes.
"""

import contextlib
import warnings
from collections.abc import Callable

import torch


def compute_dtype(amp: bool, cpu_amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 when the forward passes on ``device`` run under autocast (``amp``: ``train.amp``, on
    CUDA; ``cpu_amp``: ``train.cpu_amp``, on CPU), otherwise None (float32 throughout)."""
    on = amp if device.type == "cuda" else cpu_amp if device.type == "cpu" else False
    return torch.bfloat16 if on else None


def autocast_for(dtype: torch.dtype | None, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``device`` in ``dtype`` (from :func:`compute_dtype`), or
    of no-op contexts where it is None."""
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cpu" and not cpu_bf16_is_native():
        warnings.warn("train.cpu_amp=true on a CPU without native bf16 (no AVX512-BF16 or AMX): oneDNN emulates "
                      "bf16 there, so training gets slower, not faster", stacklevel=2)
    return lambda: torch.autocast(device.type, dtype=dtype)


def cpu_bf16_is_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere oneDNN emulates it and
    ``train.cpu_amp`` makes training slower, not faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False
