"""Check a dataset before training: every problem with its file and a hint.

    python -m pipeline.check --data PATH
    python -m pipeline.check --config configs/demo.yaml

Exits 1 when any problem is an error. ``train.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .config import load_config
from .datasets import CheckReport, check_dataset, load_dataset
from .errors import UserError, exit_on_user_error


def format_report(report: CheckReport) -> str:
    """Summary table of the cases, then every problem."""
    ds = report.dataset
    lines = [f"dataset: {ds.root}", f"layout: {ds.layout}", f"labels: {ds.labels}",
             f"cases: {len(ds.training)} training, {len(ds.test)} test"]
    if report.geometries:
        shapes = np.array([g.shape[:3] for g in report.geometries.values()])
        spacings = np.array([g.spacing[:3] for g in report.geometries.values()])

        def row(name: str, values: np.ndarray, fmt) -> str:
            stats = (values.min(0), np.median(values, 0), values.max(0))
            return f"| {name} | " + " | ".join(" x ".join(fmt(v) for v in s) for s in stats) + " |"

        lines += ["| | min | median | max |", "| --- | --- | --- | --- |",
                  row("shape (voxels)", shapes, lambda v: f"{v:.0f}"),
                  row("spacing (mm)", spacings, lambda v: f"{v:.3g}")]
    errors = len(report.errors)
    lines.append(f"problems: {errors} error(s), {len(report.problems) - errors} warning(s)")
    lines += [f"  {p}" for p in report.problems]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset root")
    source.add_argument("--config", help="a config whose data.root to check")
    args = parser.parse_args(argv)
    root = args.data if args.data is not None else load_config(args.config).data.root
    report = check_dataset(load_dataset(root))
    print(format_report(report))
    if report.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
