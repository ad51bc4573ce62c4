"""Segmentation metrics on boolean arrays (2D or 3D), distances in mm.

Definitions equal ``medpy.metric.binary`` for non-empty masks: the surface of a
mask is its voxels removed by one binary erosion with connectivity 1 (voxels on
the array border count as surface), and a surface distance is the Euclidean
distance, with voxel ``spacing``, from a surface voxel of one mask to the nearest
surface voxel of the other.

Speed: medpy runs an erosion and a distance transform over the whole volume for
each direction and each metric. Here both masks are cropped to their joint
bounding box plus one voxel (which leaves the erosion unchanged), the nearest
surface voxel is found with a KD-tree over surface voxels only (the same
Euclidean distance the transform reads off), and the two directed distance sets
are computed once per pair and shared by ``asd``, ``assd``, ``hd95`` and ``hd``
(see ``surface_distance_metrics``).

Empty masks: both empty gives Dice/Jaccard/NSD 1 and distances 0; exactly one
empty gives Dice/Jaccard/NSD 0 and distances ``inf``. Summaries count non-finite values
separately (``pipeline.evaluation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats
from scipy.spatial import cKDTree

from .surface_dice import cell_codes, surface_dice

Spacing = Sequence[float] | float | None


def binary_pair(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``ref`` as boolean arrays of one shape, each restricted to ``mask`` when given."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != pred.shape:
            raise ValueError(f"mask shape {mask.shape} differs from prediction shape {pred.shape}")
        pred, ref = pred & mask, ref & mask
    return pred, ref


def confusion(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) counted inside ``mask`` (everywhere when None)."""
    pred, ref = binary_pair(pred, ref, mask)
    n = int(mask.sum()) if mask is not None else pred.size
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn, n - tp - fp - fn


def _ratio(num: int, den: int) -> float:
    """num / den, with 0/0 = 1 (both masks empty: perfect agreement)."""
    return 1.0 if den == 0 else num / den


# Each overlap metric as a function of the counts (tp, fp, fn, tn), so that
# ``all_metrics`` counts once and the public functions stay one-liners.
_FROM_COUNTS = {
    "dice": lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn),
    "jaccard": lambda tp, fp, fn, tn: _ratio(tp, tp + fp + fn),
    "precision": lambda tp, fp, fn, tn: _ratio(tp, tp + fp) if tp + fp else float(fn == 0),
    "sensitivity": lambda tp, fp, fn, tn: _ratio(tp, tp + fn) if tp + fn else float(fp == 0),
    "specificity": lambda tp, fp, fn, tn: _ratio(tn, tn + fp),
    "accuracy": lambda tp, fp, fn, tn: _ratio(tp + tn, tp + fp + fn + tn),
}


def overlap_metrics(pred, ref, mask=None) -> dict[str, float]:
    """All overlap metrics (dice, jaccard, precision, sensitivity, specificity, accuracy) at once."""
    return overlap_from_counts(*confusion(pred, ref, mask))


def overlap_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The overlap metrics from voxel counts, e.g. summed slab by slab over a volume too large to hold."""
    return {name: rule(tp, fp, fn, tn) for name, rule in _FROM_COUNTS.items()}


def dice(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """Dice coefficient 2|P∩R| / (|P| + |R|) (medpy ``dc``); 1 when both are empty."""
    return _FROM_COUNTS["dice"](*confusion(pred, ref, mask))


def jaccard(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """Jaccard index |P∩R| / |P∪R| (medpy ``jc``); 1 when both are empty."""
    return _FROM_COUNTS["jaccard"](*confusion(pred, ref, mask))


def precision(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """TP / (TP + FP) (medpy ``precision``); 1 when both are empty, 0 when only P is."""
    return _FROM_COUNTS["precision"](*confusion(pred, ref, mask))


def sensitivity(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """TP / (TP + FN), the recall (medpy ``sensitivity``); 1 when both are empty, 0 when only R is."""
    return _FROM_COUNTS["sensitivity"](*confusion(pred, ref, mask))


def specificity(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """TN / (TN + FP) (medpy ``specificity``); 1 when there are no negatives."""
    return _FROM_COUNTS["specificity"](*confusion(pred, ref, mask))


def accuracy(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """(TP + TN) / N, the fraction of voxels (inside ``mask``) labelled correctly."""
    return _FROM_COUNTS["accuracy"](*confusion(pred, ref, mask))


def _normalize_spacing(spacing: Spacing, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,) or np.any(values <= 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing}")
    return np.ascontiguousarray(values)


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (clipped)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels removed by one erosion with connectivity 1, outside counted as background."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def nearest_distances(points: np.ndarray, targets: np.ndarray | cKDTree, chunk: int = 1 << 20) -> np.ndarray:
    """Distance (mm) from each point to the nearest target point, both (N, ndim) in mm (or the targets'
    KD-tree).

    A KD-tree over the surface points gives exactly the distance medpy reads off
    a Euclidean distance transform (nearest surface voxel, spacing applied), in
    O(S log S) for S surface voxels instead of O(V) over the whole volume.
    Queried ``chunk`` points at a time, so the query's index arrays stay small, on every core
    (the query is exact and each point's answer is its own, so the values do not depend on it).
    """
    tree = targets if isinstance(targets, cKDTree) else cKDTree(targets)
    out = np.empty(len(points))
    for i in range(0, len(points), chunk):
        out[i : i + chunk] = tree.query(points[i : i + chunk], k=1, workers=-1)[0]
    return out


def directed_surface_distances(pred, ref, spacing: Spacing = None, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of P to R's surface, and from R's to P's.

    Both masks must be non-empty. Values and their order (C order of the surface
    voxels) equal medpy's ``__surface_distances(pred, ref)`` and
    ``__surface_distances(ref, pred)``.
    """
    pred, ref = binary_pair(pred, ref, mask)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    box = bounding_box(pred | ref)
    return _surface_distances(pred[box], ref[box], _normalize_spacing(spacing, pred.ndim))


def _surface_distances(pred: np.ndarray, ref: np.ndarray, sampling: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_points = np.argwhere(surface(pred)) * sampling
    ref_points = np.argwhere(surface(ref)) * sampling
    return nearest_distances(pred_points, ref_points), nearest_distances(ref_points, pred_points)


def surface_distance_metrics(pred, ref, spacing: Spacing = None, mask=None, tolerance: float | None = None,
                             distances: bool = True) -> dict[str, float]:
    """``asd``, ``assd``, ``hd95`` and ``hd`` from one pair of distance sets (unless not ``distances``),
    and ``nsd`` at ``tolerance`` mm when given (from the same crop: no second pass over the volume).

    Both empty: distances 0, NSD 1. Exactly one empty: distances ``inf``, NSD 0.
    """
    return _boundary_metrics(*binary_pair(pred, ref, mask), spacing, distances=distances, tolerance=tolerance)


def nsd(pred, ref, spacing: Spacing = None, tolerance: float = 1.0, mask=None) -> float:
    """Normalised surface Dice at ``tolerance`` mm (Nikolov et al.; DeepMind ``surface-distance``'s
    ``compute_surface_dice_at_tolerance``): 1 when both masks are empty, 0 when exactly one is."""
    return _boundary_metrics(*binary_pair(pred, ref, mask), spacing, distances=False, tolerance=tolerance)["nsd"]


def _boundary_metrics(p: np.ndarray, r: np.ndarray, spacing: Spacing, distances: bool,
                      tolerance: float | None) -> dict[str, float]:
    """Distance metrics (when ``distances``) and NSD (when ``tolerance`` is set) of two prepared masks."""
    has_pred, has_ref = bool(p.any()), bool(r.any())
    values = {}
    if not (has_pred and has_ref):
        if distances:
            values.update(empty_distances(has_pred, has_ref))
        if tolerance is not None:
            values["nsd"] = 1.0 if has_pred == has_ref else 0.0
        return values
    sampling = _normalize_spacing(spacing, p.ndim)
    box = bounding_box(p | r)
    p, r = p[box], r[box]
    if distances:
        values.update(distance_summary(*_surface_distances(p, r, sampling)))
    if tolerance is not None:
        if not tolerance >= 0:
            raise ValueError(f"the NSD tolerance must be a number of mm >= 0, got {tolerance}")
        values["nsd"] = surface_dice(cell_codes(p), cell_codes(r), sampling, tolerance)
    return values


def distance_summary(to_ref: np.ndarray, to_pred: np.ndarray) -> dict[str, float]:
    """``asd``, ``assd``, ``hd95`` and ``hd`` of the two directed distance sets (mm): P's surface to
    R's and R's to P's (both non-empty); slab by slab, ``slab_distances.tally_summary`` gives the same."""
    both = np.concatenate([to_ref, to_pred])
    return {
        "asd": float(to_ref.mean()),
        "assd": float(both.mean()),
        "hd95": float(np.percentile(both, 95)),
        "hd": float(max(to_ref.max(), to_pred.max())),
    }


def empty_distances(has_pred: bool, has_ref: bool) -> dict[str, float]:
    """The distance metrics when a mask is empty: 0 when both are, ``inf`` when exactly one is."""
    return dict.fromkeys(DISTANCE_METRICS, 0.0 if has_pred == has_ref else float("inf"))


def asd(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """Average surface distance from P's surface to R's (directed, medpy ``asd``), mm."""
    return surface_distance_metrics(pred, ref, spacing, mask)["asd"]


def assd(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """Mean of both directed surface-distance sets taken together (medpy ``assd``), mm."""
    return surface_distance_metrics(pred, ref, spacing, mask)["assd"]


def hd95(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """95th percentile of both directed surface-distance sets together (medpy ``hd95``), mm."""
    return surface_distance_metrics(pred, ref, spacing, mask)["hd95"]


def hd(pred, ref, spacing: Spacing = None, mask=None) -> float:
    """Hausdorff distance: the largest surface distance in either direction (medpy ``hd``), mm."""
    return surface_distance_metrics(pred, ref, spacing, mask)["hd"]


def roc_auc(prob, ref, mask=None) -> float:
    """Area under the ROC curve of probabilities ``prob`` for the boolean ``ref``.

    Computed exactly as the Mann-Whitney U statistic with tied scores counted
    half (average ranks), inside ``mask`` when given. NaN when ``ref`` has only
    one class there, since the curve is then undefined.

    Not MONAI's ``compute_roc_auc``, which gives the same value with float64 labels
    (``tests/test_metrics.py``) but walks the sorted voxels in a Python loop (3.5x
    slower on a 565x584 image) and sums in the labels' dtype (float32 labels: 7.7e-5
    off there; ``benchmarks/roc_auc_vs_monai.py``).
    """
    prob = np.asarray(prob, dtype=np.float64)
    ref = np.asarray(ref, dtype=bool)
    if prob.shape != ref.shape:
        raise ValueError(f"probability shape {prob.shape} differs from reference shape {ref.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        prob, ref = prob[mask], ref[mask]
    prob, ref = prob.ravel(), ref.ravel()
    n_pos = int(ref.sum())
    n_neg = ref.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(prob)
    return float((ranks[ref].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


DISTANCE_METRICS = ("asd", "assd", "hd95", "hd")
OVERLAP_METRICS = tuple(_FROM_COUNTS)


def all_metrics(pred, ref, spacing: Spacing = None, mask=None, tolerance: float = 1.0) -> dict[str, float]:
    """Every overlap and boundary metric for one binary pair (NSD at ``tolerance`` mm), distances computed once."""
    values = overlap_metrics(pred, ref, mask)
    values.update(surface_distance_metrics(pred, ref, spacing, mask, tolerance))
    return values
