"""Surface-distance metrics: medpy vs MONAI vs ours on one organ-sized pair, same numbers.

    python benchmarks/metrics_vs_medpy.py [--shape 512 512 300] [--repeats 3]

Builds two overlapping lobulated blobs in a 512 x 512 x 300 volume with spacing
(0.8, 0.8, 2.5) mm and times the same three quantities, HD95 + ASD + ASSD, with
each library through its own API (medpy ``hd95``/``asd``/``assd``, MONAI
``compute_hausdorff_distance``/``compute_average_surface_distance``, ours
``surface_distance_metrics``), each ``--repeats`` times, and reports the medians.
Checks that our values equal medpy's (relative difference <= 1e-6) and prints the
speed ratios. medpy takes about a minute per repetition.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from medpy.metric import binary as medpy
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from pipeline import metrics

SPACING = (0.8, 0.8, 2.5)


def organ_pair(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two lobulated ellipsoids of about 200 x 160 x 60 mm, offset by a few mm."""
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, SPACING)], indexing="ij", sparse=True)
    centre = np.array(shape) * SPACING / 2
    def blob(shift, phase):
        q = sum(((g - c - d) / r) ** 2 for g, c, d, r in zip(grid, centre, shift, (100.0, 80.0, 150.0)))
        lobes = 0.08 * np.sin(grid[0] / 15 + phase) * np.cos(grid[1] / 12 + phase)
        return q < 1 + lobes
    return blob((0, 0, 0), 0.0), blob((4.0, -3.0, 5.0), 0.7)


def time_it(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_medpy(pred, ref):
    return {"hd95": medpy.hd95(pred, ref, SPACING), "asd": medpy.asd(pred, ref, SPACING),
            "assd": medpy.assd(pred, ref, SPACING)}


def run_monai(pred, ref):
    def onehot(mask):
        t = torch.from_numpy(mask)
        return torch.stack([~t, t])[None].float()
    p, r = onehot(pred), onehot(ref)
    hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)
    asd = compute_average_surface_distance(p, r, symmetric=False, spacing=SPACING)
    assd = compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)
    return {"hd95": float(hd95), "asd": float(asd), "assd": float(assd)}


def run_ours(pred, ref):
    values = metrics.surface_distance_metrics(pred, ref, SPACING)
    return {k: values[k] for k in ("hd95", "asd", "assd")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (the median is reported)")
    args = parser.parse_args()
    pred, ref = organ_pair(tuple(args.shape))
    print(f"volume {tuple(args.shape)}, spacing {SPACING} mm, {pred.sum():,} and {ref.sum():,} foreground voxels, "
          f"{torch.get_num_threads()} torch threads")

    t_ours, ours = time_it(lambda: run_ours(pred, ref), args.repeats)
    t_monai, monai = time_it(lambda: run_monai(pred, ref), args.repeats)
    t_medpy, reference = time_it(lambda: run_medpy(pred, ref), args.repeats)

    print("\n| metric | medpy | MONAI | ours | ours vs medpy (relative) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for name in ("hd95", "asd", "assd"):
        rel = abs(ours[name] - reference[name]) / abs(reference[name])
        worst = max(worst, rel)
        print(f"| {name} (mm) | {reference[name]:.6f} | {monai[name]:.6f} | {ours[name]:.6f} | {rel:.1e} |")
    print(f"\n| implementation | seconds (HD95 + ASD + ASSD, median of {args.repeats}) | speed-up vs medpy |")
    print("| --- | ---: | ---: |")
    for name, seconds in (("medpy", t_medpy), ("MONAI", t_monai), ("ours", t_ours)):
        print(f"| {name} | {seconds:.2f} | {t_medpy / seconds:.1f}x |")
    print(f"\nours is {t_medpy / t_ours:.0f}x faster than medpy and {t_monai / t_ours:.1f}x faster than MONAI; "
          f"largest relative difference to medpy {worst:.1e} ({'OK' if worst <= 1e-6 else 'FAIL'})")


if __name__ == "__main__":
    main()
