"""What a label map holds: one class id per voxel (0, 1, 2, ...). Fractions, NaN, negatives and colour
codes are refused with the file's name rather than cast; a uint8 0/255 mask is a binary label read as
0/1 (``is_binary_mask``: the one rule, for whole volumes, slabs, stores, counts and thumbnails)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from ..errors import UserError

# Foreground classes 1, 2, ... in this order: one colour per class in the slice images, .seg.nrrd and DICOM SEG.
CLASS_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6")


def class_colour(class_id: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of foreground class ``class_id`` (1, 2, ...; the colours repeat after the eighth)."""
    hex_code = CLASS_COLOURS[(class_id - 1) % len(CLASS_COLOURS)]
    return tuple(int(hex_code[i:i + 2], 16) / 255 for i in (1, 3, 5))


def is_binary_mask(values: Collection[int], dtype: np.dtype) -> bool:
    """True for a uint8 label whose values (those present) are 0 and 255 with some 255: a binary mask
    (GIF, PNG, TIFF masks as DRIVE and SenNet ship them), whose 255 is class 1."""
    return np.dtype(dtype) == np.uint8 and 255 in values and set(values) <= {0, 255}


def values_present(array: np.ndarray) -> list[int]:
    """The values a uint8 array holds (a count per possible value: no sort of the whole array)."""
    return np.flatnonzero(np.bincount(array.ravel(), minlength=256)).tolist()


def slice_plane(data: np.ndarray, file: Path, label: bool = False) -> np.ndarray:
    """A slice from ``read_slice`` as (rows, cols): a colour image gives its first channel; a label must
    hold class ids (a colour-coded one is refused)."""
    if label:
        plane = grey_label(data, file)
        return class_ids(plane.reshape(plane.shape[:2]), file)
    return data[:, :, 0, 0] if data.ndim == 4 else data


def grey_label(array: np.ndarray, path: Path) -> np.ndarray:
    """A label with a channel axis (x, y, z, C) reduced to (x, y, z) when its channels agree."""
    if array.ndim == 4 and (array != array[..., :1]).any():
        raise UserError(f"{path}: a colour-coded label ({array.shape[3]} channels that differ); store one class "
                        "id per voxel (0, 1, 2, ...), e.g. by mapping each colour to its class first")
    return array[..., 0] if array.ndim == 4 else array


def class_ids(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as integer class ids (integer arrays unchanged, without a copy); UserError naming ``path``
    for values that are not class ids (fractions, NaN, negatives)."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise UserError(f"{path}: holds NaN or infinite values; a label map holds class ids 0, 1, 2, ...")
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise UserError(f"{path}: holds values that are not class ids (e.g. {float(fractional[0]):g}); "
                            "threshold probabilities into class ids first")
    if array.dtype.kind not in "biuf" or (array.size and array.min() < 0):
        raise UserError(f"{path}: holds negative or non-numeric values; a label map holds class ids 0, 1, 2, ...")
    return array if array.dtype.kind in "biu" else array.astype(np.int64)
