"""Metrics of label volumes too large to hold, gathered slab by slab along the last axis.

The overlap metrics need voxel counts only, summed over slabs in one pass, which
also counts each slab's surface voxels (medpy's definition: the voxels one erosion
with connectivity 1 removes, the volume's outside counted as background; each slab
is eroded with one neighbouring slice on either side, so the surface is exactly the
whole volume's). The surface distances and the normalised surface Dice then read
the volumes again, slab by slab (``slab_distances.py``): memory holds a slab and a
few planes, never all the surface voxels, so a broken network's noisy prediction is
scored in the same memory as a good one. The values equal the
in-memory metrics'. clDice is not computed: a skeleton needs the whole volume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.stack import SLAB, SliceStack, stack_statistics
from ..errors import UserError
from .metrics import DISTANCE_METRICS, empty_distances, overlap_from_counts, surface
from .rows import MetricOptions, voxel_counts
from .slab_distances import Boundary, directed_distances, surface_areas_within, tally_summary

log = logging.getLogger(__name__)


@dataclass
class ClassTally:
    """What one class's metrics need from the first pass: (tp, fp, fn, tn) counts, and per slab
    (``slabs``: slice ranges) the class's voxels and surface voxels in prediction and reference."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    slabs: list[tuple[int, int]] = field(default_factory=list)
    pred_voxels: list[int] = field(default_factory=list)
    ref_voxels: list[int] = field(default_factory=list)
    pred_surface: list[int] = field(default_factory=list)
    ref_surface: list[int] = field(default_factory=list)

    def metrics(self, spacing: Sequence[float], tolerance: float = 1.0, options: MetricOptions = MetricOptions(),
                boundaries: tuple[Boundary, Boundary] | None = None) -> dict[str, float]:
        """The chosen metrics, equal to ``rows.binary_metrics`` of the whole masks (NSD at ``tolerance`` mm);
        the surface metrics read the class's ``boundaries`` (prediction, reference) again."""
        tp, fp, fn, tn = map(int, self.counts)
        values = overlap_from_counts(tp, fp, fn, tn)
        has_pred, has_ref = bool(tp + fp), bool(tp + fn)
        if not (has_pred and has_ref):
            values.update(empty_distances(has_pred, has_ref), nsd=1.0 if has_pred == has_ref else 0.0)
        elif options.wants(*DISTANCE_METRICS, "nsd"):
            if boundaries is None:
                raise ValueError("surface metrics read the volumes again: pass their boundaries")
            values.update(self._surface_metrics(*boundaries, spacing, tolerance, options))
        return {**options.keep(values), **voxel_counts(tp, fp, fn)}

    def _surface_metrics(self, pred: Boundary, ref: Boundary, spacing: Sequence[float], tolerance: float,
                         options: MetricOptions) -> dict[str, float]:
        values, sampling = {}, np.asarray(spacing, dtype=np.float64)
        if options.wants(*DISTANCE_METRICS):
            to_ref = directed_distances(pred, ref, self.slabs, self.pred_surface, self.ref_surface, sampling)
            to_pred = directed_distances(ref, pred, self.slabs, self.ref_surface, self.pred_surface, sampling)
            values.update(tally_summary(to_ref, to_pred))
        if options.wants("nsd"):
            p_close, p_total = surface_areas_within(pred, ref, self._cells_of(self.pred_voxels), sampling, tolerance)
            r_close, r_total = surface_areas_within(ref, pred, self._cells_of(self.ref_voxels), sampling, tolerance)
            values["nsd"] = (p_close + r_close) / (p_total + r_total)
        return values

    def _cells_of(self, voxels: list[int]) -> list[tuple[int, int]]:
        """The slabs whose cells (between each slice and the one before) can hold surfels: the class is in
        the slab or in the slab before."""
        return [slab for i, slab in enumerate(self.slabs) if voxels[i] or (i and voxels[i - 1])]


def score_stack(pred: SliceStack, ref: SliceStack, case: str, labels: dict[int, str],
                spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                options: MetricOptions = MetricOptions()) -> list[dict]:
    """Metric rows of a predicted stack against its label stack (voxel ``spacing`` in mm) for the
    foreground classes of ``labels``, gathered slab by slab: equal to the rows of the whole volumes,
    in memory that does not grow with the number of slices or the surface. A 0/255 mask (either side)
    counts as 0/1."""
    if pred.shape != ref.shape:
        raise UserError(f"{pred.path}: prediction shape {pred.shape} differs from label shape {ref.shape}")
    tolerances = options.tolerances(labels)
    readers = [_class_reader(stack) for stack in (pred, ref)]
    pairs = ((z, readers[0](z, stop), readers[1](z, stop)) for z, stop in _slab_ranges(pred.shape[2]))
    tallies = tally_slabs(pairs, [k for k in labels if k != 0], options)
    rows = []
    for k in sorted(tallies):
        tally = tallies[k]
        if options.wants(*DISTANCE_METRICS, "nsd") and all(tally.counts[:3]):
            log.info("%s, %s: %d + %d surface voxels scored (prediction + reference)", case, labels[k],
                     sum(tally.pred_surface), sum(tally.ref_surface))
        boundaries = tuple(Boundary(read, pred.shape, k) for read in readers)
        rows.append({"case": case, "class": k, "name": labels[k],
                     **tally.metrics(spacing, tolerances[k], options, boundaries)})
    return rows


def _slab_ranges(depth: int, thickness: int = SLAB) -> Iterator[tuple[int, int]]:
    return ((z, min(z + thickness, depth)) for z in range(0, depth, thickness))


def _class_reader(stack: SliceStack):
    """Slabs (start, stop) of a label stack as class ids, a 0/255 mask's as 0/1 (found by one more pass)."""
    binary = stack_statistics(stack, label=True).binary_mask

    def read(start: int, stop: int) -> np.ndarray:
        slab = stack.slab(start, stop)
        return (slab > 0).astype(np.uint8) if binary else slab

    return read


def tally_slabs(pairs: Iterable[tuple[int, np.ndarray, np.ndarray]], classes: Sequence[int],
                options: MetricOptions = MetricOptions()) -> dict[int, ClassTally]:
    """Counts of every class, and per slab its voxels and surface voxels, from consecutive (first slice,
    prediction slab, reference slab) triples covering a volume (integer labels, (H, W, n) each)."""
    tallies = {k: ClassTally() for k in classes}
    surfaces = options.wants(*DISTANCE_METRICS, "nsd")
    for start, pred, ref in _with_neighbours(pairs):
        own = slice(pred.offset, pred.offset + pred.size)
        for k, tally in tallies.items():
            pm, rm = pred.values == k, ref.values == k  # the class in the slab and its halo, once
            pk, rk = pm[..., own], rm[..., own]
            tp, n_pred, n_ref = int(np.count_nonzero(pk & rk)), int(np.count_nonzero(pk)), int(np.count_nonzero(rk))
            tally.counts += (tp, n_pred - tp, n_ref - tp, pk.size - (n_pred + n_ref - tp))
            tally.slabs.append((start, start + pred.size))
            tally.pred_voxels.append(n_pred)
            tally.ref_voxels.append(n_ref)
            if surfaces:
                tally.pred_surface.append(pred.surface_count(pm))
                tally.ref_surface.append(ref.surface_count(rm))
    return tallies


@dataclass
class _Halo:
    """A slab of ``size`` slices inside ``values``, which adds the neighbouring slice on each side
    that exists (``offset`` is 1 when there is one before)."""

    values: np.ndarray
    offset: int
    size: int

    def surface_count(self, mask: np.ndarray) -> int:
        """Surface voxels of ``mask`` (a class in ``values``, halo included) in the slab's own slices."""
        if not mask.any():
            return 0
        return int(np.count_nonzero(surface(mask)[..., self.offset : self.offset + self.size]))


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
