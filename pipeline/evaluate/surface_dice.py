"""Normalised surface Dice (NSD): the share of both boundaries that lies within a tolerance of the other.

Definition of Nikolov et al. (2021) as DeepMind's ``surface-distance`` computes it
(``compute_surface_dice_at_tolerance``), which is the reference in the tests:

- The boundary is made of surface elements ("surfels") on the grid of voxel
  corners. Each 2×2×2 cell of voxels (2×2 in 2D) with some but not all voxels
  inside the mask holds the marching-cubes triangles (2D: marching-squares
  segments) of its configuration, and its surfel is their area in mm² (length in
  mm), voxel ``spacing`` applied. The volume's outside counts as background.
- A surfel is within tolerance when the nearest surfel of the other mask is at
  most ``tolerance`` mm away (cell centres, Euclidean, spacing applied).
- NSD = (area of P's surfels within tolerance of R + area of R's within
  tolerance of P) / (area of P's + area of R's).

Empty masks: both empty gives 1 (as Dice does), exactly one empty gives 0.

The areas per configuration come from scikit-image's marching cubes (Lorensen's
table) run once on each 2×2×2 configuration. As in the reference, a
configuration with more than half of its corners inside takes the surfels of its
complement, so a surface is the same whichever side of it is the object.

Only "is there a surfel of the other mask within tolerance" is asked, never the
distance itself, which is far cheaper than the reference's distance transforms.
When few cell offsets lie within the tolerance (up to ``MAX_OFFSETS``: 5 at 1 mm
and 0.8 x 0.8 x 2.5 mm), each is looked up in the other boundary's grid; otherwise
a KD-tree query bounded by the tolerance answers, and the distance of the
neighbour it finds is recomputed from integer offsets. Offset lengths are
computed exactly as ``scipy.ndimage.distance_transform_edt`` computes distances,
so a surfel at exactly the tolerance counts as the reference counts it.
Written by hand because no maintained library computes this NSD (DeepMind's
package is unmaintained; MONAI's subvoxel mode is 40x slower, see
``benchmarks/metrics_vs_medpy.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree
from skimage import measure


def _corner_configuration(code: int, ndim: int) -> np.ndarray:
    """The 2×2(×2) cell of ``code``: corner i (C order) is inside when bit 2**(corners - 1 - i) is set."""
    corners = 2**ndim
    bits = [(code >> (corners - 1 - i)) & 1 for i in range(corners)]
    return np.array(bits, dtype=np.float64).reshape((2,) * ndim)


@functools.cache
def _unit_elements(ndim: int) -> tuple[np.ndarray, ...]:
    """Per code, the surfels of its cell in voxel units: triangles (T, 3, 3) in 3D, segments (S, 2, 2) in 2D."""
    corners = 2**ndim
    elements = []
    for code in range(2**corners):
        inside = bin(code).count("1")
        if inside in (0, corners):
            elements.append(np.zeros((0, ndim, ndim)))
            continue
        cell = _corner_configuration(code if 2 * inside <= corners else 2**corners - 1 - code, ndim)
        if ndim == 3:
            vertices, faces, _, _ = measure.marching_cubes(cell, 0.5, method="lorensen")
            elements.append(vertices.astype(np.float64)[faces])
        else:
            segments = [np.stack([c[:-1], c[1:]], axis=1) for c in measure.find_contours(cell, 0.5)]
            elements.append(np.concatenate(segments).astype(np.float64))
    return tuple(elements)


@functools.lru_cache(maxsize=32)
def surfel_areas(spacing: tuple[float, ...]) -> np.ndarray:
    """Area in mm² (2D: length in mm) of the surfels of each of the 256 (2D: 16) cell codes."""
    scale = np.asarray(spacing, dtype=np.float64)
    areas = []
    for element in _unit_elements(len(spacing)):
        scaled = element * scale
        if len(spacing) == 3:
            cross = np.cross(scaled[:, 1] - scaled[:, 0], scaled[:, 2] - scaled[:, 0])
            areas.append(0.5 * np.linalg.norm(cross, axis=1).sum())
        else:
            areas.append(np.linalg.norm(scaled[:, 1] - scaled[:, 0], axis=1).sum())
    return np.asarray(areas)


def cell_codes(mask: np.ndarray) -> np.ndarray:
    """The code of every 2×2(×2) cell of ``mask`` padded with background: shape ``mask.shape + 1``,
    uint8. Cell t spans voxels t - 1 and t along each axis; corner i (C order) sets bit
    2**(corners - 1 - i). Built axis by axis, last axis first (3 passes instead of 8 shifted copies)."""
    codes = np.pad(mask.astype(np.uint8), 1)
    for step, axis in enumerate(reversed(range(mask.ndim))):
        low = [slice(None)] * mask.ndim
        high = list(low)
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        codes = (codes[tuple(low)] << (1 << step)) | codes[tuple(high)]
    return codes


def boundary(codes: np.ndarray) -> np.ndarray:
    """Whether each cell of ``codes`` holds surfels: some but not all of its corners inside."""
    return (codes != 0) & (codes != 2 ** (2**codes.ndim) - 1)


def surfels(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices (N, ndim) int32 of the boundary cells among ``codes`` and their codes (N,) uint8."""
    border = boundary(codes)
    return np.argwhere(border).astype(np.int32), codes[border]


# Up to this many cell offsets within the tolerance, "is a target cell within tolerance" is answered
# by looking the offsets up in the target's boundary grid; beyond it, by a KD-tree. Same answers.
MAX_OFFSETS = 64


def tolerance_offsets(spacing: Sequence[float], tolerance: float) -> np.ndarray:
    """Integer cell offsets (K, ndim) at most ``tolerance`` mm long, lengths as ``_distances`` computes them."""
    scale = np.asarray(spacing, dtype=np.float64)
    reach = np.floor(tolerance / scale).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), axis=-1).reshape(-1, len(scale))
    return grid[_distances(grid, scale) <= tolerance]


def _distances(offsets: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Lengths (mm) of integer offsets (N, ndim), computed as ``scipy.ndimage.distance_transform_edt``
    does (scaled, squared, summed axis by axis, square root), so ties with the tolerance fall alike."""
    scaled = offsets.astype(np.float64) * scale
    return np.sqrt(sum(scaled[:, axis] ** 2 for axis in range(scaled.shape[1])))


def within_tolerance(points: np.ndarray, targets: np.ndarray, spacing: Sequence[float], tolerance: float) -> np.ndarray:
    """Whether each cell index of ``points`` (N, ndim) has a cell of ``targets`` (M, ndim) at most
    ``tolerance`` mm away (a KD-tree query bounded by the tolerance)."""
    if len(points) == 0 or len(targets) == 0:
        return np.zeros(len(points), dtype=bool)
    scale = np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(targets * scale)
    bound = tolerance * (1 + 1e-9) + 1e-12  # the tree's rounding must not drop a neighbour at exactly the tolerance
    _, nearest = tree.query(points * scale, k=1, distance_upper_bound=bound, workers=-1)
    found = nearest < len(targets)
    hits = np.zeros(len(points), dtype=bool)
    hits[found] = _distances(targets[nearest[found]] - points[found], scale) <= tolerance
    return hits


def near_cells(cells: np.ndarray, grid: np.ndarray, spacing: Sequence[float], tolerance: float) -> np.ndarray:
    """Whether each of ``cells`` (N, ndim), indices into ``grid`` (bool boundary cells), has a cell of ``grid``
    at most ``tolerance`` mm away: its offsets looked up in the grid when few, else a bounded KD-tree query."""
    offsets = tolerance_offsets(spacing, tolerance)
    if len(offsets) > MAX_OFFSETS:
        return within_tolerance(cells, np.argwhere(grid).astype(np.int32), spacing, tolerance)
    if len(cells) == 0 or not grid.any():
        return np.zeros(len(cells), dtype=bool)
    reach = np.abs(offsets).max(axis=0)  # padded by it, a cell's neighbours are flat index steps away
    padded = np.pad(grid, [(r, r) for r in reach])
    flat = np.ravel_multi_index(tuple((cells + reach).T), padded.shape)
    return _any_at(flat, padded, offsets @ _c_strides(padded.shape))


def surface_dice(pred_codes: np.ndarray, ref_codes: np.ndarray, spacing: Sequence[float], tolerance: float) -> float:
    """NSD of two non-empty masks given as the ``cell_codes`` of one crop of both."""
    areas = surfel_areas(tuple(float(s) for s in spacing))
    (p_cells, p_codes), (r_cells, r_codes) = surfels(pred_codes), surfels(ref_codes)
    p_close = near_cells(p_cells, boundary(ref_codes), spacing, tolerance)
    r_close = near_cells(r_cells, boundary(pred_codes), spacing, tolerance)
    return _dice_of_areas(areas[p_codes], p_close, areas[r_codes], r_close)


def _dice_of_areas(p_area: np.ndarray, p_close: np.ndarray, r_area: np.ndarray, r_close: np.ndarray) -> float:
    return float((p_area[p_close].sum() + r_area[r_close].sum()) / (p_area.sum() + r_area.sum()))


def _c_strides(shape: tuple[int, ...]) -> np.ndarray:
    """Flat-index step of one voxel along each axis in C order, whatever the array's memory layout."""
    return np.array([int(np.prod(shape[axis + 1 :])) for axis in range(len(shape))], dtype=np.int64)


def _any_at(cells: np.ndarray, grid: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Whether ``grid`` is set at any of the flat ``steps`` from each flat index of ``cells``."""
    flat = grid.ravel()
    hits = np.zeros(len(cells), dtype=bool)
    for step in steps:
        hits |= flat[cells + step]
    return hits
