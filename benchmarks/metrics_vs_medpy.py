"""Surface-distance metrics and NSD: medpy / surface-distance vs MONAI vs ours on one organ-sized pair.

    python benchmarks/metrics_vs_medpy.py [--shape 512 512 300] [--repeats 3] [--tolerance 1.0]

Builds two overlapping lobulated blobs in a 512 x 512 x 300 volume with spacing
(0.8, 0.8, 2.5) mm and times the same three quantities, HD95 + ASD + ASSD, with
each library through its own API (medpy ``hd95``/``asd``/``assd``, MONAI
``compute_hausdorff_distance``/``compute_average_surface_distance``, ours
``surface_distance_metrics``), each ``--repeats`` times, and reports the medians.
Checks that our values equal medpy's (relative difference <= 1e-6) and prints the
speed ratios. medpy takes about a minute per repetition.

NSD rows: the normalised surface Dice at ``--tolerance`` mm, by DeepMind's
``surface-distance`` (``compute_surface_distances`` + ``compute_surface_dice_at_tolerance``,
the reference), MONAI's ``compute_surface_dice`` with ``use_subvoxels=True`` (the
same surfels) and ours ``nsd``, timed the same way; and what NSD adds when a report
computes it with the distances in one call (``surface_distance_metrics(...,
tolerance=...)``) against the distances alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from medpy.metric import binary as medpy
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

from pipeline import metrics

ROOT = Path(__file__).resolve().parents[1]

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
    p, r = onehot(pred), onehot(ref)
    hd95 = compute_hausdorff_distance(p, r, percentile=95, spacing=SPACING)
    asd = compute_average_surface_distance(p, r, symmetric=False, spacing=SPACING)
    assd = compute_average_surface_distance(p, r, symmetric=True, spacing=SPACING)
    return {"hd95": float(hd95), "asd": float(asd), "assd": float(assd)}


def onehot(mask: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(mask)
    return torch.stack([~t, t])[None].float()


def nsd_reference(pred, ref, tolerance):
    import surface_distance  # DeepMind's implementation (pip install surface-distance), a test-only dependency
    return surface_distance.compute_surface_dice_at_tolerance(
        surface_distance.compute_surface_distances(ref, pred, SPACING), tolerance)


def nsd_monai(pred, ref, tolerance):
    return float(compute_surface_dice(onehot(pred), onehot(ref), [tolerance], spacing=SPACING, use_subvoxels=True))


def nsd_rows(pred, ref, tolerance: float, repeats: int) -> None:
    """The NSD table: three implementations, and NSD's cost on top of the distances."""
    t_ref, reference = time_it(lambda: nsd_reference(pred, ref, tolerance), repeats)
    t_monai, monai = time_it(lambda: nsd_monai(pred, ref, tolerance), repeats)
    t_ours, ours = time_it(lambda: metrics.nsd(pred, ref, SPACING, tolerance), repeats)
    alone, both = [], []  # interleaved, so that both see the same state of the machine
    for _ in range(repeats):
        alone.append(time_it(lambda: run_ours(pred, ref), 1)[0])
        both.append(time_it(lambda: metrics.surface_distance_metrics(pred, ref, SPACING, tolerance=tolerance), 1)[0])
    t_distances, t_both = statistics.median(alone), statistics.median(both)
    print(f"\n| NSD at {tolerance} mm | value | difference to surface-distance | seconds (median of {repeats}) "
          "| speed-up vs surface-distance |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, value, seconds in (("surface-distance (DeepMind)", reference, t_ref),
                                 ("MONAI compute_surface_dice, use_subvoxels", monai, t_monai),
                                 ("ours nsd", ours, t_ours)):
        print(f"| {name} | {value:.9f} | {abs(value - reference):.1e} | {seconds:.2f} | {t_ref / seconds:.1f}x |")
    print(f"\nHD95 + ASD + ASSD alone {t_distances:.3f} s; with NSD in the same call {t_both:.3f} s: "
          f"NSD adds {100 * (t_both / t_distances - 1):.0f} % (median of {repeats} each)")


def cldice_row(repeats: int) -> None:
    """clDice of a DRIVE manual segmentation (565 x 584) against a perturbed copy: ours (skeletons of the
    bounding boxes) and the paper's definition on the whole images, the same skimage skeletons."""
    from skimage.morphology import skeletonize
    from PIL import Image
    manual = sorted((ROOT.parent / "shared" / "datasets" / "DRIVE" / "training" / "1st_manual").glob("*.gif"))
    if not manual:
        print("\nclDice row skipped: no DRIVE manual segmentations under ../shared/datasets/DRIVE")
        return
    ref = np.array(Image.open(manual[0])) > 0
    rng = np.random.default_rng(0)
    pred = ndimage.binary_erosion(ref) | (ndimage.binary_dilation(rng.random(ref.shape) > 0.999, iterations=2))
    def definition():
        s_pred, s_ref = skeletonize(pred), skeletonize(ref)
        t_prec, t_sens = (s_pred & ref).sum() / s_pred.sum(), (s_ref & pred).sum() / s_ref.sum()
        return 2 * t_prec * t_sens / (t_prec + t_sens)
    t_def, value_def = time_it(definition, repeats)
    t_ours, value = time_it(lambda: metrics.cldice(pred, ref), repeats)
    print(f"\nclDice of {manual[0].name} ({ref.shape[1]} x {ref.shape[0]}) against an eroded, speckled copy: "
          f"ours {value:.6f} in {t_ours * 1000:.1f} ms, the paper's definition {value_def:.6f} in "
          f"{t_def * 1000:.1f} ms (median of {repeats} each): {t_def / t_ours:.2f}x")


def run_ours(pred, ref):
    values = metrics.surface_distance_metrics(pred, ref, SPACING)
    return {k: values[k] for k in ("hd95", "asd", "assd")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library (the median is reported)")
    parser.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance in mm (default 1)")
    parser.add_argument("--skip-medpy", action="store_true", help="NSD rows only (medpy takes minutes)")
    args = parser.parse_args()
    pred, ref = organ_pair(tuple(args.shape))
    print(f"volume {tuple(args.shape)}, spacing {SPACING} mm, {pred.sum():,} and {ref.sum():,} foreground voxels, "
          f"{torch.get_num_threads()} torch threads")

    t_ours, ours = time_it(lambda: run_ours(pred, ref), args.repeats)
    nsd_rows(pred, ref, args.tolerance, max(args.repeats, 7))
    cldice_row(max(args.repeats, 5))
    if args.skip_medpy:
        return
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
