"""A volume's voxel grid read off its 4x4 voxel-to-RAS affine: voxel sizes, axis directions, and how
two grids differ (a label against its image, one channel file against another)."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from ..errors import UserError


def check_same_grid(image, label) -> None:
    """Refuse a label read by slab (``volume_slabs.SlabSource``) whose voxel grid is not its image's:
    another shape, or, for volume files, another affine."""
    if image.shape != label.shape:
        raise UserError(f"{label.path}: shape {label.shape} differs from image shape {image.shape}; it must be on "
                        f"the grid of {image.path.name} (a missing or extra slice?)")
    affines = getattr(image, "affine", None), getattr(label, "affine", None)
    if all(a is not None for a in affines) and not np.allclose(*affines, atol=1e-3):
        raise UserError(f"{label.path}: label geometry (affine) differs from the image's ({image.path}); "
                        "resample the label onto the image grid (nearest neighbour) first")


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes (mm) of a 4x4 affine (``nibabel.affines.voxel_sizes``) as plain floats."""
    return tuple(float(v) for v in voxel_sizes(affine))


def grid_difference(shape: Sequence[int], affine: np.ndarray, image_shape: Sequence[int],
                    image_affine: np.ndarray) -> str | None:
    """How a label's (or mask's) grid differs from its image's, or None when it lies on it: shape, spacing
    (relative 1e-3) and axis directions (each file is reoriented on its own: a flip would mirror it)."""
    if tuple(shape[:3]) != tuple(image_shape[:3]):
        return f"shape {tuple(shape[:3])} differs from image shape {tuple(image_shape[:3])}"
    spacing, image_spacing = spacing_from_affine(affine), spacing_from_affine(image_affine)
    if not np.allclose(spacing, image_spacing, rtol=1e-3, atol=1e-4):
        return f"spacing {spacing} differs from image spacing {image_spacing}"
    if axis_codes(affine) != axis_codes(image_affine):
        return f"its axes run {axis_codes(affine)}, the image's {axis_codes(image_affine)}"
    return None


def axis_codes(affine: np.ndarray) -> str:
    """The direction each voxel axis runs in world space, e.g. ``RAS`` or ``LPS`` (nibabel's codes)."""
    return "".join(nib.orientations.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def origin_difference(affine: np.ndarray, reference: np.ndarray) -> str | None:
    """How far the origin of ``affine`` lies from ``reference``'s, when more than a hundredth of a voxel."""
    shift = float(np.linalg.norm(np.asarray(affine)[:3, 3] - np.asarray(reference)[:3, 3]))
    tolerance = 0.01 * min(spacing_from_affine(reference))
    return f"its origin is {shift:.3g} mm from the other's" if shift > tolerance else None
