"""Rows per case and class, and the summary over cases.

A row holds every metric of ``pipeline.metrics`` for one case and one
foreground class. The summary gives, per class and metric, mean / std / median
over the finite values and ``n_nonfinite``, the number of cases where the metric
was infinite (one mask empty) or undefined, so a model that misses a structure
cannot look better than one that finds it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from ..data.io import read_volume
from ..errors import UserError
from . import metrics

METRIC_NAMES = ("dice", "jaccard", "asd", "assd", "hd95", "hd", "precision", "sensitivity", "specificity", "accuracy")


def evaluate_case(
    case: str,
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Mapping[int, str],
    spacing=None,
    mask: np.ndarray | None = None,
    prob: np.ndarray | None = None,
) -> list[dict]:
    """One row per foreground class of ``labels``: case, class id, name and every metric.

    pred, ref: integer label maps of one shape; spacing in mm per axis; ``mask``
    restricts all metrics to a field of view; ``prob`` (K, ...) adds ``auc``.
    """
    if pred.shape != ref.shape:
        raise UserError(f"{case}: prediction shape {pred.shape} differs from reference shape {ref.shape}")
    rows = []
    for label_id, name in sorted(labels.items()):
        if label_id == 0:
            continue
        p, r = pred == label_id, ref == label_id
        row = {"case": case, "class": label_id, "name": name, **metrics.all_metrics(p, r, spacing, mask)}
        if prob is not None:
            row["auc"] = metrics.roc_auc(prob[label_id], r, mask)
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
    """Per class and metric statistics, plus top-level ``mean_dice`` over foreground classes."""
    rows = list(rows)
    classes: dict[str, dict] = {}
    for label_id in sorted({r["class"] for r in rows}):
        class_rows = [r for r in rows if r["class"] == label_id]
        names = [m for m in (*METRIC_NAMES, "auc") if m in class_rows[0]]
        classes[str(label_id)] = {
            "name": class_rows[0]["name"],
            "metrics": {m: _stats([float(r[m]) for r in class_rows]) for m in names},
        }
    dice_means = [c["metrics"]["dice"]["mean"] for c in classes.values() if c["metrics"]["dice"]["mean"] is not None]
    return {
        "n_cases": len({r["case"] for r in rows}),
        "mean_dice": float(np.mean(dice_means)) if dice_means else None,
        "classes": classes,
    }


def evaluate_files(
    case: str, pred_path: Path, ref_path: Path, labels: Mapping[int, str] | None, mask_path: Path | None = None
) -> list[dict]:
    """Rows for one prediction file against its reference; spacing read from the reference."""
    pred, pred_spacing = read_volume(pred_path)
    ref, spacing = read_volume(ref_path)
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
        top = int(max(pred.max(initial=0), ref.max(initial=0), 1))
        labels = {i: f"label {i}" for i in range(1, top + 1)}
    return evaluate_case(case, pred.astype(np.int64), ref.astype(np.int64), labels, spacing, mask)
