"""Rows per case and class, and the summary over cases.

A row holds the chosen metrics of ``pipeline.metrics`` for one case and one
foreground class, and its voxel counts (``pred_voxels``, ``ref_voxels``). The
summary gives, per class and metric, mean / std / median over the finite values
and ``n_nonfinite``, the number of cases where the metric was infinite (one mask
empty) or undefined, so a model that misses a structure cannot look better than
one that finds it. A class absent from both the prediction and the reference of
a case scores 1 in its row (nothing to find, nothing found) but is left out of
the summary and counted as ``n_absent``: a label map with classes nobody drew
cannot raise the mean Dice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import REPORT_METRICS, Config
from ..data.grids import axis_codes, spacing_from_affine
from ..data.io import load_image, read_volume
from ..data.label_maps import class_ids
from ..errors import UserError
from . import metrics
from .centreline import cldice

METRIC_NAMES = REPORT_METRICS


@dataclass(frozen=True)
class MetricOptions:
    """Which metrics rows hold (Dice always) and how: the NSD tolerance in mm, one for every class or
    one per foreground class in label order; clDice for the ``tubular`` class ids only."""

    names: tuple[str, ...] = REPORT_METRICS
    tolerance: float | tuple[float, ...] = 1.0
    tubular: frozenset[int] = frozenset()

    @classmethod
    def from_config(cls, cfg: Config) -> MetricOptions:
        return cls(cfg.evaluate.metrics, cfg.evaluate.nsd_tolerance_mm, frozenset(cfg.data.tubular_classes))

    def tolerances(self, labels: Mapping[int, str]) -> dict[int, float]:
        """Tolerance (mm) of each foreground class of ``labels``; UserError when a list does not fit them."""
        foreground = sorted(k for k in labels if k != 0)
        if not isinstance(self.tolerance, tuple):
            return dict.fromkeys(foreground, float(self.tolerance))
        if len(self.tolerance) == 1:
            return dict.fromkeys(foreground, float(self.tolerance[0]))
        if len(self.tolerance) != len(foreground):
            raise UserError(f"evaluate.nsd_tolerance_mm lists {len(self.tolerance)} tolerances for "
                            f"{len(foreground)} foreground classes ({', '.join(labels[k] for k in foreground)}); "
                            "give one, or one per class")
        return dict(zip(foreground, map(float, self.tolerance)))

    def wants(self, *names: str) -> bool:
        return any(n in self.names for n in names)

    def keep(self, values: Mapping[str, float]) -> dict[str, float]:
        """The chosen metrics of ``values``, in the report's order (Dice always)."""
        return {m: values[m] for m in REPORT_METRICS if m in values and (m in self.names or m == "dice")}


def binary_metrics(p: np.ndarray, r: np.ndarray, spacing, mask: np.ndarray | None, tolerance: float,
                   options: MetricOptions, tubular: bool) -> dict[str, float]:
    """The chosen metrics of one binary pair and its voxel counts; the distance sets and NSD share one crop."""
    tp, fp, fn, tn = metrics.confusion(p, r, mask)
    values = metrics.overlap_from_counts(tp, fp, fn, tn)
    values.update(metrics.surface_distance_metrics(
        p, r, spacing, mask, tolerance if options.wants("nsd") else None,
        distances=options.wants(*metrics.DISTANCE_METRICS)))
    if tubular and options.wants("cldice"):
        values["cldice"] = cldice(p, r, mask)
    return {**options.keep(values), **voxel_counts(tp, fp, fn)}


VOXEL_COUNTS = ("pred_voxels", "ref_voxels")


def voxel_counts(tp: int, fp: int, fn: int) -> dict[str, int]:
    """A row's class size: voxels of the class in the prediction and in the reference."""
    return {"pred_voxels": int(tp + fp), "ref_voxels": int(tp + fn)}


def absent(row: Mapping) -> bool:
    """Whether the row's class is in neither mask (rows written before the counts existed: present)."""
    return row.get("pred_voxels", 1) == 0 and row.get("ref_voxels", 1) == 0


def _flat(*arrays: np.ndarray | None, spacing=None) -> tuple:
    """Arrays without their axes of length 1 (a single-slice volume is scored as its 2D image: in 3D every voxel
    of one slice would be surface) and the spacing of the kept axes."""
    shape = next(a.shape for a in arrays if a is not None)
    keep = [axis for axis, n in enumerate(shape) if n > 1]
    if len(keep) == len(shape) or len(keep) < 2:
        return (*arrays, spacing)
    squeezed = tuple(None if a is None else a.reshape([shape[i] for i in keep]) for a in arrays)
    return (*squeezed, None if spacing is None else [float(np.broadcast_to(spacing, len(shape))[i]) for i in keep])


def evaluate_case(
    case: str,
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Mapping[int, str],
    spacing=None,
    mask: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    options: MetricOptions = MetricOptions(),
) -> list[dict]:
    """One row per foreground class of ``labels``: case, class id, name and the chosen metrics.

    pred, ref: integer label maps of one shape; spacing in mm per axis; ``mask``
    restricts all metrics to a field of view; ``prob`` (K, ...) adds ``auc``.
    Axes of length 1 are dropped first (a single-slice volume is scored as a 2D image).
    """
    if pred.shape != ref.shape:
        raise UserError(f"{case}: prediction shape {pred.shape} differs from reference shape {ref.shape}")
    tolerances = options.tolerances(labels)
    pred, ref, mask, spacing = _flat(pred, ref, mask, spacing=spacing)
    rows = []
    for label_id, name in sorted(labels.items()):
        if label_id == 0:
            continue
        p, r = pred == label_id, ref == label_id
        values = binary_metrics(p, r, spacing, mask, tolerances[label_id], options, label_id in options.tubular)
        row = {"case": case, "class": label_id, "name": name, **values}
        if prob is not None:
            row["auc"] = metrics.roc_auc(prob[label_id].reshape(r.shape), r, mask)
        rows.append(row)
    return rows


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_nonfinite": len(values)}
    return {
        "mean": float(np.mean(finite)),
        "std": float(np.std(finite)),
        "median": float(np.median(finite)),
        "n": len(finite),
        "n_nonfinite": len(values) - len(finite),
    }


def summarize(rows: Iterable[dict]) -> dict:
    """Per class and metric statistics over the cases where the class is present in the prediction or
    the reference (``n_absent``: the others), plus top-level ``mean_dice`` over foreground classes."""
    rows = list(rows)
    classes: dict[str, dict] = {}
    for label_id in sorted({r["class"] for r in rows}):
        class_rows = [r for r in rows if r["class"] == label_id]
        present = [r for r in class_rows if not absent(r)]
        names = [m for m in (*METRIC_NAMES, "auc") if m in class_rows[0]]
        classes[str(label_id)] = {
            "name": class_rows[0]["name"],
            "n_absent": len(class_rows) - len(present),
            "metrics": {m: _stats([float(r[m]) for r in present]) for m in names},
        }
    dice_means = [c["metrics"]["dice"]["mean"] for c in classes.values() if c["metrics"]["dice"]["mean"] is not None]
    return {
        "n_cases": len({r["case"] for r in rows}),
        "mean_dice": float(np.mean(dice_means)) if dice_means else None,
        "classes": classes,
    }


def evaluate_files(
    case: str, pred_path: Path, ref_path: Path, labels: Mapping[int, str] | None, mask_path: Path | None = None,
    options: MetricOptions = MetricOptions(),
) -> list[dict]:
    """Rows for one prediction file against its reference; spacing read from the reference.

    Both are read as label maps (a uint8 0/255 mask counts as 0/1, as everywhere); a map holding
    values that are not class ids (fractions, NaN, negatives) is refused. Without ``labels``, the
    classes are the values present in either file."""
    pred, pred_affine = _label_map(pred_path)
    ref, ref_affine = _label_map(ref_path)
    pred_spacing, spacing = spacing_from_affine(pred_affine), spacing_from_affine(ref_affine)
    if axis_codes(pred_affine) != axis_codes(ref_affine):  # compared voxel by voxel, one would be mirrored
        raise UserError(f"{pred_path}: its axes run {axis_codes(pred_affine)} but {ref_path}'s run "
                        f"{axis_codes(ref_affine)}; predictions must be on the reference grid")
    if pred.shape != ref.shape:
        raise UserError(f"{pred_path} has shape {pred.shape} but {ref_path} has {ref.shape}; "
                        "predictions must be on the reference grid")
    if not np.allclose(pred_spacing, spacing, rtol=1e-4, atol=1e-5):
        raise UserError(f"{pred_path} has spacing {tuple(round(s, 5) for s in pred_spacing)} but {ref_path} has "
                        f"{tuple(round(s, 5) for s in spacing)}; predictions must be on the reference grid")
    mask = None
    if mask_path is not None:
        mask, _ = read_volume(mask_path)
        if mask.shape != ref.shape:
            raise UserError(f"{mask_path} has shape {mask.shape} but {ref_path} has {ref.shape}")
        mask = mask > 0
    if labels is None:
        found = sorted(set(np.unique(pred).tolist()) | set(np.unique(ref).tolist()) - {0})
        labels = {int(i): f"label {i}" for i in found or [1]}
    return evaluate_case(case, pred, ref, labels, spacing, mask, options=options)


def _label_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    array, affine = load_image(path, label=True)
    return class_ids(array, path), affine
