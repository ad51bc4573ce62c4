"""Batch evaluation wall time with 1 process and with one per core, on 20 cases.

    python benchmarks/evaluate_workers.py [--cases 20]

Writes 20 phantom label maps (160 x 160 x 96, 0.8 x 0.8 x 2.0 mm) and a
"prediction" for each (the label dilated and eroded by a voxel in places),
evaluates the folder with ``--workers 1`` and ``--workers N``, checks the rows
are identical, and prints both wall times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.data.synthetic import PhantomSpec, make_phantom
from pipeline.data.writers import save_nifti
from pipeline.evaluate import evaluate_folder
from pipeline.evaluate.report import read_metrics_csv


def write_cases(root: Path, n: int) -> None:
    (root / "ref").mkdir()
    (root / "pred").mkdir()
    spec = PhantomSpec()
    for i in range(n):
        _, label, affine = make_phantom(spec, i)
        rng = np.random.default_rng(i)
        pred = label.copy()
        grow = ndimage.binary_dilation(label == 1) & (rng.random(label.shape) < 0.5) & (label == 0)
        pred[grow] = 1
        pred[ndimage.binary_erosion(label == 2, iterations=1) ^ (label == 2)] = 1
        save_nifti(label, affine, root / "ref" / f"case_{i:03d}.nii.gz")
        save_nifti(pred, affine, root / "pred" / f"case_{i:03d}.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cases(root, args.cases)
        times: dict[int, list[float]] = {1: [], workers: []}
        for repeat in range(args.repeats):
            for n in times:
                start = time.perf_counter()
                evaluate_folder(root / "pred", root / "ref", root / f"out-{n}-{repeat}", labels=[1, 2], workers=n)
                times[n].append(time.perf_counter() - start)
        one, several = (read_metrics_csv(root / f"out-{n}-0" / "metrics.csv") for n in (1, workers))
        same = one == several
    one, many = statistics.median(times[1]), statistics.median(times[workers])
    print(f"{args.cases} cases, 2 classes, median of {args.repeats} runs")
    print("| workers | wall seconds |\n| ---: | ---: |")
    print(f"| 1 | {one:.2f} |\n| {workers} | {many:.2f} |")
    print(f"speed-up with {workers} processes: {one / many:.2f}x; rows identical: {same}")


if __name__ == "__main__":
    main()
