"""Exact distances from one label volume's surface voxels to another's, read slab by slab: a Euclidean
distance transform split by axis, so memory holds a slab and a few planes whatever the volume's depth
and however much surface a prediction has.

The squared distance from voxel p to the nearest feature (a surface voxel of B) is separable
(Meijster et al. 2000; Felzenszwalb and Huttenlocher 2012):

1. along the slab axis, per column: ``g(x, y, z)``, the distance to the column's nearest feature, needs
   only the column's last feature below and first feature above. One pass from the end keeps "first
   feature above" per column (a plane) and saves it at each slab that will be asked (in a temporary
   file, so memory does not grow with the depth); the pass from the start keeps "last feature below";
2. in the plane, per slice: ``d²(x, y) = min over (x', y') of sx²(x-x')² + sy²(y-y')² + g(x', y')²``,
   two one-dimensional lower envelopes of parabolas, row by row then column by column.

Each distance is the exact nearest one, as medpy reads it off scipy's transform of the whole volume, at
a cost linear in the voxels. A KD-tree of B's surface (what ``metrics.nearest_distances`` uses for
volumes in memory) answers queries from far away slowly, about 0.1 M a second here against a reference
surface of 36 k voxels, and a broken prediction asks one per voxel of its surface: hundreds of millions.

Written by hand because no maintained library offers a distance transform in bounded memory or one
step of it with given initial values (scipy, ITK and ``edt`` transform whole arrays).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

NONE = np.iinfo(np.int32).max  # "no feature in this column" in the saved planes
FAR = 1 << 30  # column distances (slices) at least this large mean no feature
NEAR = 4  # lines whose minima lie this close (positions) take shifted minima instead of the envelope


class Surface(Protocol):
    """A label volume's surface voxels of one class, read slab by slab (``slab_distances.Boundary``)."""

    shape: tuple[int, int, int]

    def mask(self, start: int, stop: int) -> np.ndarray: ...


def envelope(g: np.ndarray, step2: float) -> np.ndarray:
    """``f[l, q] = min over p of step2 * (q - p)**2 + g[l, p]`` for every line ``l`` of ``g`` (L, n), mm²:
    the lower envelope of one parabola per finite value, inf on lines holding none.

    A line whose minimum is always within ``NEAR`` positions (bounded by its largest value and its longest
    run without one) takes ``2 * NEAR`` shifted minima; the others build the envelope."""
    out = np.full(g.shape, np.inf)
    reach = _reach(g, step2)
    near, far = np.flatnonzero((reach >= 0) & (reach <= NEAR)), np.flatnonzero(reach > NEAR)
    if len(near):
        out[near] = _by_shifts(g[near], step2, int(reach[near].max()))
    if len(far):
        out[far] = _by_parabolas(g[far], step2)
    return out


def _reach(g: np.ndarray, step2: float) -> np.ndarray:
    """Per line, how far (positions) its minima can lie, where that is at most ``NEAR`` (-1: no finite value,
    ``NEAR + 1``: further): bounded by the line's largest value and its longest run without one."""
    finite = np.isfinite(g)
    largest = np.where(finite, g, 0).max(axis=1) / step2
    reach = np.where(finite.any(axis=1), NEAR + 1, -1)
    close = np.flatnonzero((reach > 0) & (largest <= NEAR**2))  # the gaps decide
    n = g.shape[1]
    index = np.arange(n, dtype=np.int32)
    have = finite[close]
    before = np.maximum.accumulate(np.where(have, index, -2 * n), axis=1)
    after = np.minimum.accumulate(np.where(have, index, 3 * n)[:, ::-1], axis=1)[:, ::-1]
    gap = np.minimum(index - before, after - index).max(axis=1).astype(float)
    bound = np.sqrt(largest[close] + gap**2) * (1 + 1e-9)  # no rounding below a whole step
    reach[close] = np.minimum(np.floor(bound), NEAR + 1)
    return reach


def _by_shifts(g: np.ndarray, step2: float, reach: int) -> np.ndarray:
    """The envelope of lines whose minima all lie within ``reach`` positions: shifted minima."""
    f = g.copy()
    for d in range(1, reach + 1):
        np.minimum(f[:, d:], g[:, :-d] + step2 * d * d, out=f[:, d:])
        np.minimum(f[:, :-d], g[:, d:] + step2 * d * d, out=f[:, :-d])
    return f


def _by_parabolas(g: np.ndarray, step2: float) -> np.ndarray:
    """Felzenszwalb and Huttenlocher's lower envelope, built for all lines at once position by position."""
    count, n = g.shape
    values = np.ascontiguousarray(g.T).reshape(-1)  # position q of line l at q * count + l
    apex = np.zeros(n * count, dtype=np.int32)  # parabola k of line l (k <= top[l]) at k * count + l
    start = np.full((n + 1) * count, np.inf)  # where parabola k starts being the lowest
    top = np.full(count, -1, dtype=np.int64)
    crossing = np.empty(count)
    for q in range(n):
        here = values[q * count : (q + 1) * count]
        lines = np.flatnonzero(here < np.inf)
        if not len(lines):
            continue
        pending = lines[top[lines] >= 0]
        level = here[pending] + step2 * q * q
        while len(pending):  # drop the parabolas the new one lies below from where they start
            at = top[pending] * count + pending
            p = apex[at].astype(np.int64)  # p * count passes int32 on planes of thousands of voxels a side
            cross = (level - (values[p * count + pending] + step2 * p * p)) / (2 * step2 * (q - p))
            crossing[pending] = cross
            hidden = cross <= start[at]
            pending, level = pending[hidden], level[hidden]
            top[pending] -= 1
        fresh = top[lines] < 0
        top[lines] += 1
        at = top[lines] * count + lines
        apex[at] = q
        start[at] = np.where(fresh, -np.inf, crossing[lines])
        start[at + count] = np.inf
    # the parabola at position q: the number of starts k >= 1 below q (they increase along a line)
    starts = start.reshape(n + 1, count)
    k = np.arange(n + 1)[:, None]
    real = (k >= 1) & (k <= top[None, :])
    first = np.clip(np.floor(starts[real]) + 1, 0, n).astype(np.int64)  # first position past each start
    lines = np.nonzero(real)[1]
    passed = np.bincount(lines * (n + 1) + first, minlength=count * (n + 1)).reshape(count, n + 1)
    which = np.cumsum(passed[:, :n], axis=1, dtype=np.int32)  # (L, n)
    p = apex.reshape(n, count)[which, np.arange(count)[:, None]]
    return step2 * (np.arange(n)[None, :] - p) ** 2 + np.take_along_axis(g, p, axis=1)


def in_plane(g2: np.ndarray, wanted: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Squared distances (mm², in the order of ``np.nonzero(wanted)``) at the voxels of ``wanted`` (H, W, L)
    to the features whose squared distances along each column are ``g2`` (H, W, L; inf: none; fastest
    when it is a view of an (L, H, W) array, as ``column_distances`` gives)."""
    h, w, depth = g2.shape
    rows = envelope(np.moveaxis(g2, 2, 0).reshape(-1, w), spacing[1] ** 2)  # lines along axis 1: (L * H, W)
    across = rows.reshape(depth, h, w).transpose(0, 2, 1).reshape(-1, h)  # lines along axis 0: (L * W, H)
    asked = wanted.transpose(2, 1, 0).reshape(-1, h)  # the same lines of ``wanted``
    lines = np.flatnonzero(asked.any(axis=1))
    out = np.zeros_like(across)
    out[lines] = envelope(across[lines], spacing[0] ** 2)
    return out.reshape(depth, w, h).transpose(2, 1, 0)[wanted]


def column_distances(features: np.ndarray | None, below: np.ndarray, above: np.ndarray, start: int, stop: int,
                     step: float) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances (mm², (H, W, L), a view of an (L, H, W) array; inf: none) along the slab axis from
    each voxel of slices [start, stop) to its column's nearest feature, the last feature per column up to
    ``stop``).

    The features are those of the slab (``features``, (H, W, L) bool; None: none), the last one before it
    (``below``: a slice index per column, -NONE for none) and the first one after it (``above``: NONE for
    none); ``step`` is the slice spacing (mm)."""
    slices = np.moveaxis(features, -1, 0).copy() if features is not None else None  # (L, H, W)
    gap = np.empty((stop - start, *below.shape))
    last = below.astype(np.int64)
    for z in range(start, stop):
        if slices is not None:
            last[slices[z - start]] = z
        gap[z - start] = z - last
    first = above.astype(np.int64)
    for z in range(stop - 1, start - 1, -1):
        if slices is not None:
            first[slices[z - start]] = z
        np.minimum(gap[z - start], first - z, out=gap[z - start])
    gap[gap >= FAR] = np.inf
    gap *= step
    gap **= 2
    return np.moveaxis(gap, 0, -1), last


def squared_distances(a: Surface, b: Surface, slabs: Sequence[tuple[int, int]], a_counts: Sequence[int],
                      b_counts: Sequence[int], spacing: Sequence[float]) -> Iterator[np.ndarray]:
    """For each of ``slabs`` (slice ranges covering the volume in order) holding surface voxels of A
    (``a_counts`` per slab; B's in ``b_counts``), the squared distances (mm²) from them to B's surface."""
    asked = {i: n for n, i in enumerate(i for i, count in enumerate(a_counts) if count)}  # slab -> plane
    if not asked:
        return
    with tempfile.TemporaryDirectory(prefix="distances-") as folder:
        above = _first_above(b, slabs, b_counts, asked, Path(folder))
        below = np.full(a.shape[:2], -NONE, dtype=np.int64)
        for i, (start, stop) in enumerate(slabs[: max(asked) + 1]):
            features = b.mask(start, stop) if b_counts[i] else None
            if i in asked:
                g2, below = column_distances(features, below, above[asked[i]], start, stop, spacing[2])
                yield in_plane(g2, a.mask(start, stop), spacing)
            elif features is not None:
                for z in range(start, stop):
                    below[features[..., z - start]] = z


def _first_above(b: Surface, slabs: Sequence[tuple[int, int]], b_counts: Sequence[int], asked: dict[int, int],
                 folder: Path) -> np.ndarray:
    """Per slab of ``asked`` (slab -> plane), the first slice at or after its end holding each column's
    feature (NONE: none), as planes of a memory-mapped file in ``folder``: one pass from the volume's end."""
    planes = np.lib.format.open_memmap(folder / "above.npy", mode="w+", dtype=np.int32,
                                       shape=(len(asked), *b.shape[:2]))
    first = np.full(b.shape[:2], NONE, dtype=np.int32)
    for i in range(len(slabs) - 1, min(asked) - 1, -1):
        if i in asked:
            planes[asked[i]] = first
        if b_counts[i]:
            start, stop = slabs[i]
            features = b.mask(start, stop)
            for z in range(stop - 1, start - 1, -1):
                first[features[..., z - start]] = z
    return planes
