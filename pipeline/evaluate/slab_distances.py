"""Surface distances and NSD of two label volumes read slab by slab, in memory that no prediction can grow
past a bound: however much surface a broken network predicts, a slab and a few planes are held at a time.

Distances from the surface voxels of A to the surface of B (medpy's definition, ``metrics.surface``) come
from a KD-tree of B's surface voxels while both surfaces are small (up to ``TREE_POINTS``), else from a
distance transform of B's surface split by axis (``distance_field.py``), exact and linear in the voxels.
They go to a ``DistanceTally``: count, sum, maximum and the count of each distinct value, so ``hd95`` is
the exact 95th percentile (as ``np.percentile``) without holding the distances.

NSD at a tolerance is local: a surfel's partner within the tolerance lies within ``tolerance / spacing``
cell slices, so each slab of A asks B's surfels in that window only.

Written by hand because no maintained library computes surface distances in bounded memory (MONAI,
medpy and DeepMind's package take whole volumes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .distance_field import squared_distances
from .metrics import nearest_distances, surface
from .surface_dice import boundary, cell_codes, near_cells, surfel_areas, surfels

Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> class ids (H, W, stop - start)
# Up to this many surface voxels on both sides, one KD-tree of B's answers A's slab by slab: fast when the
# surfaces are near (a good prediction), about 0.1 M queries a second here when far, so at most a minute.
# Beyond it, the distance transform (``distance_field.py``): linear in the voxels whatever the surfaces.
TREE_POINTS = 5_000_000


@dataclass
class DistanceTally:
    """A set of distances (mm) summarised exactly: count, sum, maximum, and each distinct value's count."""

    n: int = 0
    total: float = 0.0
    largest: float = 0.0
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, distances: np.ndarray) -> None:
        if not len(distances):
            return
        self.n += len(distances)
        self.total += float(distances.sum())
        self.largest = max(self.largest, float(distances.max()))
        values, counts = np.unique(distances, return_counts=True)
        self._merge(values, counts)

    def _merge(self, values: np.ndarray, counts: np.ndarray) -> None:
        joined, where = np.unique(np.concatenate([self.values, values]), return_inverse=True)
        self.counts = np.bincount(where, weights=np.concatenate([self.counts, counts]),
                                  minlength=len(joined)).astype(np.int64)
        self.values = joined

    def joined(self, other: DistanceTally) -> DistanceTally:
        both = DistanceTally(self.n + other.n, self.total + other.total, max(self.largest, other.largest),
                             self.values, self.counts)
        both._merge(other.values, other.counts)
        return both

    def percentile(self, q: float) -> float:
        """``np.percentile(distances, q)`` (linear interpolation), from the counts."""
        rank = q / 100 * (self.n - 1)  # numpy's virtual index
        below = math.floor(rank)
        ends = np.cumsum(self.counts)  # the value at sorted position i is values[searchsorted(ends, i, 'right')]
        lo, hi = (self.values[np.searchsorted(ends, i, side="right")] for i in (below, min(below + 1, self.n - 1)))
        t = rank - below
        return float(hi - (hi - lo) * (1 - t) if t >= 0.5 else lo + (hi - lo) * t)  # numpy's _lerp


def tally_summary(to_ref: DistanceTally, to_pred: DistanceTally) -> dict[str, float]:
    """``asd``, ``assd``, ``hd95`` and ``hd`` of the two directed sets, as ``metrics.distance_summary``."""
    both = to_ref.joined(to_pred)
    return {"asd": to_ref.total / to_ref.n, "assd": both.total / both.n, "hd95": both.percentile(95),
            "hd": both.largest}


@dataclass
class Boundary:
    """Class ``k`` of a label volume of ``shape`` (H, W, D) read by ``read``: its surface voxels and its
    boundary cells in any range of slices, each computed from the slices and their neighbours."""

    read: Reader
    shape: tuple[int, int, int]
    k: int

    @property
    def depth(self) -> int:
        return self.shape[2]

    def mask(self, start: int, stop: int) -> np.ndarray:
        """The surface voxels in slices [start, stop): (H, W, stop - start) bool."""
        lo, hi = max(start - 1, 0), min(stop + 1, self.depth)
        found = self.read(lo, hi) == self.k
        return surface(found)[..., start - lo : stop - lo] if found.any() else found[..., start - lo : stop - lo]

    def points(self, start: int, stop: int) -> np.ndarray:
        """Volume indices (N, 3) of the surface voxels in slices [start, stop)."""
        found = np.argwhere(self.mask(start, stop))
        found[:, 2] += start
        return found

    def codes(self, start: int, stop: int) -> tuple[int, np.ndarray]:
        """(t0, codes): the ``cell_codes`` of cells t in [start, stop) along the slab axis, clipped to the
        volume's cells (cell t spans voxels t - 1 and t; indices of the volume padded by one voxel), from t0."""
        start, stop = max(start, 0), min(stop, self.depth + 1)
        lo, hi = max(start - 1, 0), min(stop, self.depth)
        return start, cell_codes(self.read(lo, hi) == self.k)[..., start - lo : stop - lo]

    def cells(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Boundary cells in [start, stop) along the slab axis (indices as ``codes``) and their codes."""
        first, codes = self.codes(start, stop)
        found, values = surfels(codes)
        found[:, 2] += first
        return found, values


def directed_distances(a: Boundary, b: Boundary, slabs: Sequence[tuple[int, int]], a_counts: Sequence[int],
                       b_counts: Sequence[int], spacing: Sequence[float]) -> DistanceTally:
    """Distances (mm) from A's surface voxels to B's surface, both read by ``slabs`` (slice ranges covering
    the volume; ``a_counts`` and ``b_counts``: surface voxels per slab)."""
    tally = DistanceTally()
    if sum(a_counts) + sum(b_counts) <= TREE_POINTS:
        scale = np.asarray(spacing, dtype=np.float64)
        tree = cKDTree(np.concatenate([b.points(*slab) for slab, n in zip(slabs, b_counts) if n]) * scale)
        for slab, n in zip(slabs, a_counts):
            if n:
                tally.add(nearest_distances(a.points(*slab) * scale, tree))
        return tally
    for squared in squared_distances(a, b, slabs, a_counts, b_counts, spacing):
        tally.add(np.sqrt(squared))
    return tally


def surface_areas_within(a: Boundary, b: Boundary, slabs: Sequence[tuple[int, int]], spacing: Sequence[float],
                         tolerance: float) -> tuple[float, float]:
    """(area of A's surfels within ``tolerance`` mm of B's, area of all of A's surfels), A read by
    ``slabs`` and B's boundary cells in a window ``tolerance`` wide around each."""
    areas = surfel_areas(tuple(float(s) for s in spacing))
    reach = math.floor(tolerance / spacing[2]) + 1
    close = total = 0.0
    for start, stop in slabs:
        own_stop = stop + 1 if stop == a.depth else stop  # the cells past the last slice
        cells, codes = a.cells(start, own_stop)
        if not len(cells):
            continue
        first, window = b.codes(start - reach, own_stop + reach)
        cells[:, 2] -= first
        area = areas[codes]
        close += float(area[near_cells(cells, boundary(window), spacing, tolerance)].sum())
        total += float(area.sum())
    return close, total
