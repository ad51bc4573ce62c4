"""Surface distances and NSD of two label volumes read slab by slab, in memory that no prediction can grow
past a bound: however much surface a broken network predicts, a few slabs and a KD-tree of at most
``CHUNK_POINTS`` points are held at a time.

Distances from the surface voxels of A to the surface of B (medpy's definition, ``metrics.surface``):
B's slabs are grouped into chunks of at most ``CHUNK_POINTS`` surface voxels (one chunk when B is small:
one tree, built once). Each slab of A asks the chunks nearest along the slab axis first and stops when
the next chunk's gap is longer than every distance found so far, so each distance is the exact nearest
one. The distances go to a ``DistanceTally``: count, sum, maximum and the count of each distinct value,
so ``hd95`` is the exact 95th percentile (as ``np.percentile``) without holding the distances.

NSD at a tolerance is local: a surfel's partner within the tolerance lies within ``tolerance / spacing``
cell slices, so each slab of A asks B's surfels in that window only.

Written by hand because no maintained library computes surface distances in bounded memory (MONAI,
medpy and DeepMind's package take whole volumes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from .metrics import nearest_distances, surface
from .surface_dice import cell_codes, surfel_areas, surfels, within_tolerance

Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> class ids (H, W, stop - start)
CHUNK_POINTS = 20_000_000  # surface voxels per KD-tree: ~1.4 GB with the tree's copy and the query's


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
    """Class ``k`` of a label volume of ``depth`` slices read by ``read``: its surface voxels and its
    boundary cells in any range of slices, each computed from the slices and their neighbours."""

    read: Reader
    depth: int
    k: int

    def points(self, start: int, stop: int) -> np.ndarray:
        """Volume indices (N, 3) int32 of the surface voxels in slices [start, stop)."""
        lo, hi = max(start - 1, 0), min(stop + 1, self.depth)
        mask = self.read(lo, hi) == self.k
        if not mask.any():
            return np.zeros((0, 3), dtype=np.int32)
        found = np.argwhere(surface(mask)[..., start - lo : stop - lo]).astype(np.int32)
        found[:, 2] += start
        return found

    def cells(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Boundary cells t in [start, stop) along the slab axis (cell t spans voxels t - 1 and t; indices
        of the volume padded by one voxel, as ``cell_codes``) and their codes."""
        start, stop = max(start, 0), min(stop, self.depth + 1)
        lo, hi = max(start - 1, 0), min(stop, self.depth)
        codes = cell_codes(self.read(lo, hi) == self.k)[..., start - lo : stop - lo]
        found, values = surfels(codes)
        found[:, 2] += start
        return found, values


def directed_distances(a: Boundary, b: Boundary, slabs: Sequence[tuple[int, int]],
                       chunks: Sequence[tuple[int, int]], spacing: np.ndarray) -> DistanceTally:
    """Distances from A's surface voxels to B's surface, A read by ``slabs`` and B by ``chunks`` (slice
    ranges, each holding at most about ``CHUNK_POINTS`` of B's surface voxels)."""
    tally, trees = DistanceTally(), OrderedDict()
    for start, stop in slabs:
        points = a.points(start, stop) * spacing
        if not len(points):
            continue
        best = np.full(len(points), np.inf)
        for index in sorted(range(len(chunks)), key=lambda i: _gap(chunks[i], start, stop)):
            reach = _gap(chunks[index], start, stop) * spacing[2] * (1 - 1e-9)  # no point there is nearer
            ask = best >= reach
            if not ask.any():
                break
            tree = _tree(trees, index, lambda: b.points(*chunks[index]) * spacing)
            if tree is not None:
                best[ask] = np.minimum(best[ask], nearest_distances(points[ask], tree))
        tally.add(best)
    return tally


def _gap(chunk: tuple[int, int], start: int, stop: int) -> int:
    """Slices between the nearest slices of ``chunk`` and [start, stop) (0 when they overlap)."""
    return max(0, chunk[0] - (stop - 1), start - (chunk[1] - 1))


def _tree(cache: OrderedDict, index: int, points: Callable[[], np.ndarray], keep: int = 2) -> cKDTree | None:
    """The KD-tree of chunk ``index`` (None when it has no surface), the last ``keep`` ones cached."""
    if index not in cache:
        found = points()
        cache[index] = cKDTree(found) if len(found) else None
        while len(cache) > keep:
            cache.popitem(last=False)
    cache.move_to_end(index)
    return cache[index]


def surface_areas_within(a: Boundary, b: Boundary, slabs: Sequence[tuple[int, int]], spacing: Sequence[float],
                         tolerance: float) -> tuple[float, float]:
    """(area of A's surfels within ``tolerance`` mm of B's, area of all of A's surfels), A read by
    ``slabs`` and B in a window ``tolerance`` wide around each."""
    areas = surfel_areas(tuple(float(s) for s in spacing))
    reach = math.floor(tolerance / spacing[2]) + 1
    close = total = 0.0
    for start, stop in slabs:
        own_stop = stop + 1 if stop == a.depth else stop  # the cells past the last slice
        cells, codes = a.cells(start, own_stop)
        if not len(cells):
            continue
        targets, _ = b.cells(start - reach, own_stop + reach)
        area = areas[codes]
        close += float(area[within_tolerance(cells, targets, spacing, tolerance)].sum())
        total += float(area.sum())
    return close, total


def chunked(slabs: Sequence[tuple[int, int]], counts: Sequence[int], limit: int | None = None
            ) -> list[tuple[int, int]]:
    """Consecutive ``slabs`` merged into slice ranges of at most ``limit`` (default ``CHUNK_POINTS``)
    surface voxels (``counts`` per slab; a slab over the limit alone), empty slabs left out."""
    limit = CHUNK_POINTS if limit is None else limit
    chunks, current, held = [], None, 0
    for (start, stop), n in zip(slabs, counts):
        if n == 0:
            continue
        if current is not None and held + n <= limit and current[1] == start:
            current, held = (current[0], stop), held + n
            continue
        if current is not None:
            chunks.append(current)
        current, held = (start, stop), n
    return chunks + ([current] if current is not None else [])
