"""Check a dataset before training: every problem with its file and a hint.

    python -m pipeline.check --data PATH
    python -m pipeline.check --config configs/drive.yaml   # with the config's layout options

Exits 1 when any problem is an error. ``train.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from .config import DataConfig, load_config
from .datasets import CheckReport, check_dataset, load_dataset
from .errors import exit_on_user_error


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
    errors = len(report.errors)
    lines.append(f"problems: {errors} error(s), {len(report.problems) - errors} warning(s)")
    lines += [f"  {p}" for p in report.problems]
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (default: the config's data.root)")
    parser.add_argument("--config", help="a config whose data options (layout, keys, spacing) to use")
    args = parser.parse_args(argv)
    if args.data is None and args.config is None:
        parser.error("give --data PATH or --config PATH")
    data = load_config(args.config).data if args.config else DataConfig()
    root = args.data if args.data is not None else data.root
    report = check_dataset(load_dataset(root, data), data)
    print(format_report(report))
    if report.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
