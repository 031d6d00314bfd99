"""Pixel spacing of lung images, so HD95 can be in millimetres: read from NIfTI headers (the
voxel sizes, ``pixdim``) and scaled to the model's input size. PNG and JPEG files carry none.

A header's spacing is trusted only when it names its unit (mm, metre or micron): nibabel and
many converters write 1.0 with the unit left "unknown" when nobody set it, and calling that
1 mm per pixel would make up a number. An image without a trusted spacing leaves the whole set
in pixels (see :func:`set_spacing`): one run never mixes millimetres and pixels.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medsplit.data.errors import DataError
from medsplit.data.lung_folder import LungRecord, is_nifti

__all__ = ["native_spacing", "input_spacing", "set_spacing", "spacing_range"]

# NIfTI spatial units nibabel names -> millimetres per unit
_MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}
_SPATIAL_AXES = 3  # NIfTI axes 0-2 are space; 3 on are time and others


def native_spacing(path: Path) -> tuple[tuple[float, float], tuple[int, int]] | None:
    """``((row mm, column mm), (rows, columns))`` of a 2-D NIfTI image (or one slice of a
    volume) from its header alone, or ``None`` where the file is no NIfTI or states no unit.

    Args:
        path: an image file.

    Raises:
        DataError: an unreadable NIfTI header, naming the file.
    """
    if not is_nifti(path):
        return None
    try:
        header = nib.load(str(path)).header  # reads the header, not the pixels
        shape, zooms = header.get_data_shape(), header.get_zooms()
        unit = header.get_xyzt_units()[0]
    except Exception as error:
        raise DataError(f"cannot read the NIfTI header of {path}: {type(error).__name__}: {error}") from error
    if unit not in _MM_PER_UNIT:
        return None
    plane = [axis for axis, size in enumerate(shape) if size != 1]  # as the pixel reader drops size-1 axes
    if len(plane) != 2 or plane[-1] >= _SPATIAL_AXES:
        return None  # not a 2-D image in space; the pixel reader reports the shape
    # str() of the stored float32 is the shortest decimal that gives it back: 0.7, not 0.699999988
    row, column = (float(str(np.float32(zooms[axis]))) * _MM_PER_UNIT[unit] for axis in plane)
    if not (row > 0 and column > 0 and np.isfinite(row) and np.isfinite(column)):
        return None
    return (row, column), (int(shape[plane[0]]), int(shape[plane[1]]))


def input_spacing(native: tuple[float, float], native_shape: tuple[int, int], size: int) -> tuple[float, float]:
    """The spacing at the model's input: images are zero-padded to a square of their longer
    side (padding keeps the spacing) and then resized to ``size``, which scales both axes by
    ``longer side / size``.

    Args:
        native: ``(row mm, column mm)`` of the stored image.
        native_shape: ``(rows, columns)`` of the stored image.
        size: the model's input height and width (``data.img_size``).
    """
    scale = max(native_shape) / size
    return native[0] * scale, native[1] * scale


def set_spacing(records: list[LungRecord], size: int) -> dict[str, tuple[float, float]] | None:
    """``{image id: (row mm, column mm)}`` at the model's input for every record, or ``None``
    when any image has no trusted spacing (a PNG set, NIfTI files without a unit): then HD95
    stays in pixels for the whole set.

    Args:
        records: the set's images.
        size: the model's input height and width.
    """
    out = {}
    for record in records:
        found = native_spacing(record.image)
        if found is None:
            return None
        out[record.id] = input_spacing(*found, size)
    return out or None


def spacing_range(spacing: dict[str, tuple[float, float]]) -> dict[str, float]:
    """``{"min": ..., "max": ...}`` mm per pixel over both axes of every image, for the data summary."""
    values = [v for pair in spacing.values() for v in pair]
    return {"min": round(min(values), 6), "max": round(max(values), 6)}
