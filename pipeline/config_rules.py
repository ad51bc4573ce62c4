"""What each configuration key may hold, beyond its type: choices, ranges and list contents.

``problem(key, value)`` says what is wrong with a typed value, or None; ``config.py`` turns it into one
line naming the key. Every key is checked when the configuration is read, before anything is created,
so a bad ``infer.*`` value stops a run before its first epoch rather than after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Every metric a report can hold (``evaluate.metrics``); clDice only for ``data.tubular_classes``.
REPORT_METRICS = ("dice", "jaccard", "nsd", "cldice", "asd", "assd", "hd95", "hd", "precision", "sensitivity",
                  "specificity", "accuracy")

CHOICES = {
    "data.modality": ("CT", "MR", "generic"),
    "data.layout": ("auto", "msd", "paired", "h5", "stack", "list"),
    "data.pair_by": ("auto", "name", "number"),
    "data.contrast": ("none", "clahe"),
    "data.lazy": ("auto", "always", "never"),
    "model.norm": ("instance", "batch"),
    "train.lr_schedule": ("poly", "step"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "infer.precision": ("auto", "fp32", "bf16", "fp16"),
    "infer.blend": ("gaussian", "constant"),
    "infer.backend": ("auto", "torch", "openvino", "onnxruntime"),
    "infer.dicom_seg_type": ("binary", "fractional"),
}

PROBABILITIES = ("train.pos_fraction", "train.flip_prob", "train.affine_prob", "train.intensity_prob",
                 "train.gamma_prob", "train.noise_prob", "train.blur_prob", "train.contrast_prob", "train.low_res_prob",
                 "data.cache_rate")

COUNTS = ("train.epochs", "train.batch_size", "train.samples_per_volume", "train.volumes_per_epoch",
          "train.val_every", "train.lr_step_epochs", "infer.sw_batch_size", "train.max_nonfinite_steps")


BUDGET = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*")
UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600}


def budget_seconds(value: str | float) -> float | None:
    """Seconds of a time budget (``30m``, ``1.5h``, ``90s``, a number of minutes); None when it is not one."""
    match = BUDGET.fullmatch(str(value))
    if match is None or float(match.group(1)) <= 0:
        return None
    return float(match.group(1)) * UNITS[match.group(2) or "m"]


def _series_selector(value: str) -> bool:
    key, equals, pattern = value.partition("=")
    if key == "description" and equals:
        try:
            re.compile(pattern)
        except re.error:
            return False
    return bool(equals and pattern) and key in ("modality", "description", "uid")


def _each(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


# key: (holds, what the key must be)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: v not in ("", ".", "..") and not any(c in v for c in "/\\"),
             "must be a plain folder name (no / or \\, not . or ..): runs go into output_dir/<name>-<time>"),
    "train.seed": (lambda v: v >= 0, "must be >= 0"),
    "train.budget": (lambda v: budget_seconds(v) is not None,
                     "must be a time such as 30m, 1.5h or 90s (a bare number counts minutes)"),
    "train.lr": (lambda v: v > 0, "must be > 0"),
    "train.momentum": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "train.lr_gamma": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "train.dice_weight": (lambda v: v >= 0, "must be >= 0"),
    "train.ce_weight": (lambda v: v >= 0, "must be >= 0"),
    "train.rotate_degrees": (lambda v: 0 <= v <= 180, "must be in [0, 180]"),
    "train.scale_range": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "train.patch_size": (lambda v: min(v) >= 1, "must be three sizes >= 1"),
    "model.channels": (lambda v: len(v) >= 2 and min(v) >= 1, "must list at least two widths >= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "data.intensity_range": (lambda v: v[0] < v[1], "must be [low, high] with low < high"),
    "data.intensity_target": (lambda v: v[0] < v[1], "must be [low, high] with low < high"),
    "data.val_fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "data.folds": (lambda v: v >= 0, "must be >= 0"),
    "data.workers": (lambda v: v >= 0, "must be >= 0"),
    "data.cache_memory_gb": (lambda v: v >= 0, "must be >= 0"),
    "data.lazy_voxels": (lambda v: v >= 0, "must be >= 0"),
    "infer.overlap": (lambda v: all(0 <= o < 1 for o in _each(v)), "must be in [0, 1)"),
    "infer.stream_voxels": (lambda v: v >= 0, "must be >= 0"),
    "infer.largest_component": (lambda v: isinstance(v, bool) or all(k >= 1 for k in v),
                                "must be true, false or a list of foreground class ids (1 or more)"),
    "infer.fill_holes": (lambda v: isinstance(v, bool) or all(k >= 1 for k in v),
                         "must be true, false or a list of foreground class ids (1 or more)"),
    "evaluate.nsd_tolerance_mm": (lambda v: v != () and min(_each(v)) >= 0,
                                  "must be a tolerance in mm >= 0, or one per foreground class"),
    "data.channel_modality": (lambda v: len(v) >= 1 and set(v) <= set(CHOICES["data.modality"]),
                              "must list one of CT, MR or generic per input channel"),
    "data.tubular_classes": (lambda v: all(k >= 1 for k in v), "lists foreground label ids (1 or more)"),
    "infer.output_format": (lambda v: len(_each(v)) >= 1 and set(_each(v)) <= {"nifti", "nrrd-seg", "dicom-seg"},
                            "must be nifti, nrrd-seg, dicom-seg or a list of them"),
    "data.dicom_series": (_series_selector, "must be modality=CT, description=REGEX (a valid one) or uid=UID"),
}


def problem(key: str, value: Any) -> str | None:
    """What is wrong with the typed ``value`` of ``key``, or None."""
    if key in CHOICES and value not in CHOICES[key]:
        return f"must be one of {', '.join(CHOICES[key])}"
    if key in PROBABILITIES and not 0 <= value <= 1:
        return "is a probability and must be in [0, 1]"
    if key in COUNTS and value is not None and value < 1:
        return "must be at least 1"
    if key == "evaluate.metrics" and not (value and set(value) <= set(REPORT_METRICS)):
        return f"must list metrics of {', '.join(REPORT_METRICS)}"
    rule = RULES.get(key)
    if rule and value is not None and not rule[0](value):
        return rule[1]
    return None
