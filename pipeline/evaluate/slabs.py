"""Metrics of label volumes too large to hold, gathered slab by slab along the last axis.

The overlap metrics need voxel counts only, summed over slabs. The surface
distances need the surface voxels of each mask (medpy's definition: the voxels
one erosion with connectivity 1 removes, the volume's outside counted as
background). An erosion looks one voxel along each axis, so each slab is eroded
with one neighbouring slice on either side and only its own slices are kept:
the surface found is exactly the whole volume's. The nearest-surface distances
then come from a KD-tree over the surface points, as in the in-memory
``metrics.directed_surface_distances``, so the values are the same ones.
The normalised surface Dice needs the surfels of the 2×2×2 cells between
voxels: a slab's cells are those between its slices and the slice before
(plus the cells past the last slice), so each cell is found once, with the
code the whole volume gives it. clDice is not computed: a skeleton needs the
whole volume.

Memory: one slab plus the surface points (a few bytes per surface voxel), never
the volume.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.stack import SliceStack, stack_statistics
from ..errors import UserError
from .metrics import DISTANCE_METRICS, distance_summary, empty_distances, nearest_distances, overlap_from_counts, surface
from .rows import MetricOptions, voxel_counts
from .surface_dice import cell_codes, surfel_dice, surfels


@dataclass
class ClassTally:
    """What one class's metrics need: (tp, fp, fn, tn) counts, the surface voxel indices (N, 3) and
    the surfels (cell indices (N, 3), codes (N,)) of prediction and reference."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    pred_surface: list[np.ndarray] = field(default_factory=list)
    ref_surface: list[np.ndarray] = field(default_factory=list)
    pred_surfels: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    ref_surfels: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def metrics(self, spacing: Sequence[float], tolerance: float = 1.0, options: MetricOptions = MetricOptions()
                ) -> dict[str, float]:
        """The chosen metrics, equal to ``rows.binary_metrics`` of the whole masks (NSD at ``tolerance`` mm)."""
        tp, fp, fn, tn = map(int, self.counts)
        values = overlap_from_counts(tp, fp, fn, tn)
        has_pred, has_ref = bool(tp + fp), bool(tp + fn)
        if not (has_pred and has_ref):
            values.update(empty_distances(has_pred, has_ref), nsd=1.0 if has_pred == has_ref else 0.0)
        else:
            if options.wants(*DISTANCE_METRICS):
                pred, ref = _points(self.pred_surface, spacing), _points(self.ref_surface, spacing)
                values.update(distance_summary(nearest_distances(pred, ref), nearest_distances(ref, pred)))
            if options.wants("nsd"):
                values["nsd"] = surfel_dice(_joined(self.pred_surfels), _joined(self.ref_surfels), spacing, tolerance)
        return {**options.keep(values), **voxel_counts(tp, fp, fn)}


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p for p, _ in parts]), np.concatenate([c for _, c in parts])


def _points(parts: list[np.ndarray], spacing: Sequence[float]) -> np.ndarray:
    if not parts:
        return np.zeros((0, 3))
    return np.concatenate(parts).astype(np.float64) * np.asarray(spacing, dtype=np.float64)


def score_stack(pred: SliceStack, ref: SliceStack, case: str, labels: dict[int, str],
                spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                options: MetricOptions = MetricOptions()) -> list[dict]:
    """Metric rows of a predicted stack against its label stack (voxel ``spacing`` in mm) for the
    foreground classes of ``labels``, gathered slab by slab: equal to the rows of the whole volumes,
    in memory that does not grow with the number of slices. A 0/255 mask (either side) counts as 0/1."""
    if pred.shape != ref.shape:
        raise UserError(f"{pred.path}: prediction shape {pred.shape} differs from label shape {ref.shape}")
    tolerances = options.tolerances(labels)
    pairs = ((z, p, r) for (z, p), (_, r) in zip(_class_slabs(pred), _class_slabs(ref)))
    tallies = tally_slabs(pairs, [k for k in labels if k != 0], options)
    return [{"case": case, "class": k, "name": labels[k], **tallies[k].metrics(spacing, tolerances[k], options)}
            for k in sorted(tallies)]


def _class_slabs(stack: SliceStack) -> Iterator[tuple[int, np.ndarray]]:
    """The slabs of a label stack, a 0/255 mask's as 0/1 (that takes one more pass over the stack)."""
    binary = stack_statistics(stack, label=True).binary_mask
    for z, slab in stack.slabs():
        yield z, (slab > 0).astype(np.uint8) if binary else slab


def tally_slabs(pairs: Iterable[tuple[int, np.ndarray, np.ndarray]], classes: Sequence[int],
                options: MetricOptions = MetricOptions()) -> dict[int, ClassTally]:
    """Counts, surface voxels and surfels of every class, from consecutive (first slice, prediction
    slab, reference slab) triples covering a volume (integer labels, (H, W, n) each)."""
    tallies = {k: ClassTally() for k in classes}
    distances, nsd = options.wants(*DISTANCE_METRICS), options.wants("nsd")
    for start, pred, ref in _with_neighbours(pairs):
        own = slice(pred.offset, pred.offset + pred.size)
        for k, tally in tallies.items():
            pm, rm = pred.values == k, ref.values == k  # the class in the slab and its halo, once
            pk, rk = pm[..., own], rm[..., own]
            tp = int(np.count_nonzero(pk & rk))
            tally.counts += (tp, int(np.count_nonzero(pk)) - tp, int(np.count_nonzero(rk)) - tp, 0)
            tally.counts[3] += pk.size - int(np.count_nonzero(pk | rk))
            if distances:
                tally.pred_surface.append(pred.surface_points(pm, start))
                tally.ref_surface.append(ref.surface_points(rm, start))
            if nsd:
                tally.pred_surfels.append(pred.surfels(pm, start))
                tally.ref_surfels.append(ref.surfels(rm, start))
    return tallies


@dataclass
class _Halo:
    """A slab of ``size`` slices inside ``values``, which adds the neighbouring slice on each side
    that exists (``offset`` is 1 when there is one before)."""

    values: np.ndarray
    offset: int
    size: int

    def surface_points(self, mask: np.ndarray, start: int) -> np.ndarray:
        """Volume indices (N, 3) int32 of the surface voxels of ``mask`` (a class in ``values``, halo
        included) in the slab's own slices."""
        if not mask.any():
            return np.zeros((0, 3), dtype=np.int32)
        points = np.argwhere(surface(mask)[..., self.offset : self.offset + self.size]).astype(np.int32)
        points[:, 2] += start
        return points

    def surfels(self, mask: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """The boundary cells of ``mask`` (a class in ``values``, halo included) in the slab (cell indices
        (N, 3) of the volume padded by one voxel, codes (N,)): the cells between each own slice and the
        one before, and past the last slice of the volume when the slab ends it."""
        before = mask[..., :1] if self.offset else np.zeros_like(mask[..., :1])
        own = mask[..., self.offset : self.offset + self.size]
        last = self.offset + self.size == mask.shape[-1]  # no slice after: the slab ends the volume
        codes = cell_codes(np.concatenate([before, own], axis=-1))[..., 1 : self.size + 1 + last]
        points, values = surfels(codes)
        points[:, 2] += start
        return points, values


def _with_neighbours(pairs: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, _Halo, _Halo]]:
    """Each slab pair with the last slice of the slabs before and the first of the slabs after
    (none at the volume's ends), reading one slab ahead."""
    before: tuple = (None, None)
    current = None
    for item in _ended(pairs):
        if current is not None:
            start, *slabs = current
            after = (item[1][..., :1], item[2][..., :1]) if item is not None else (None, None)
            halos = [_halo(slab, b, a) for slab, b, a in zip(slabs, before, after)]
            yield start, halos[0], halos[1]
            before = tuple(slab[..., -1:] for slab in slabs)
        current = item


def _ended(items: Iterable) -> Iterator:
    yield from items
    yield None


def _halo(slab: np.ndarray, before: np.ndarray | None, after: np.ndarray | None) -> _Halo:
    parts = [p for p in (before, slab, after) if p is not None]
    return _Halo(np.concatenate(parts, axis=-1), 0 if before is None else 1, slab.shape[-1])
