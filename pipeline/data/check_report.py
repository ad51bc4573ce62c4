"""The check's report: the dataset's cases in one table, the DICOM series each case folder holds (and
which one is the case), then every problem."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from .formats import dicom_series, pick_series
from .io import kind_of

if TYPE_CHECKING:
    from .check import CheckReport


def series_lines(report: CheckReport) -> list[str]:
    """Per DICOM case folder: its series, the one the case reads marked with ``*``."""
    lines = []
    for case in report.dataset.training + report.dataset.test:
        if kind_of(case.image) != "dicom":
            continue
        found = dicom_series(case.image)  # the folder is scanned once
        try:
            chosen = pick_series(case.image, report.dicom_series, found).uid
        except UserError:
            chosen = None  # reported among the problems
        lines.append(f"DICOM series of {case.id} ({len(found)}):")
        lines += [f"  {'*' if s.uid == chosen else ' '} {s.describe()}" for s in found]
    return lines


def format_report(report: CheckReport) -> str:
    """Summary table of the cases, then every problem."""
    ds = report.dataset
    lines = [f"dataset: {ds.root}", f"layout: {ds.layout}", f"labels: {ds.labels}",
             f"cases: {len(ds.training)} training, {len(ds.test)} test"]
    stats = list(report.stats.values())
    if stats:
        def row(name: str, values: np.ndarray, fmt) -> str:
            columns = (values.min(0), np.median(values, 0), values.max(0))
            return f"| {name} | " + " | ".join(" x ".join(fmt(v) for v in np.atleast_1d(c)) for c in columns) + " |"

        counts: dict[int, int] = {}
        for s in stats:
            for label, n in s.label_counts.items():
                counts[label] = counts.get(label, 0) + n
        lines += ["| | min | median | max |", "| --- | --- | --- | --- |",
                  row("shape (voxels)", np.array([s.shape for s in stats]), lambda v: f"{v:.0f}"),
                  row("spacing (mm)", np.array([s.spacing for s in stats]), lambda v: f"{v:.3g}"),
                  row("intensity low", np.array([[s.intensity[0]] for s in stats]), lambda v: f"{v:.4g}"),
                  row("intensity high", np.array([[s.intensity[1]] for s in stats]), lambda v: f"{v:.4g}")]
        total = sum(counts.values()) or 1
        lines.append("label voxels: " + ", ".join(f"{ds.labels.get(k, k)} {v:,} ({100 * v / total:.2f} %)"
                                                  for k, v in sorted(counts.items())))
    lines += series_lines(report)
    errors = len(report.errors)
    lines.append(f"problems: {errors} error(s), {len(report.problems) - errors} warning(s)")
    lines += [f"  {p}" for p in report.problems]
    return "\n".join(lines)
