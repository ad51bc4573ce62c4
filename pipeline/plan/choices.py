"""The plan: configuration keys chosen from a dataset's fingerprint, each with a one-line reason.

The rules follow nnU-Net's where they concern the data (CT windows from foreground percentiles,
z-scores for everything else, median target spacing) and this project's CPU measurements where they
concern cost (a patch of about the 112 x 112 x 80 voxels the presets train at 0.5 s per step on two
cores; the residual UNet, the cheapest family per step in ``benchmarks/results/models_table.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models3d.blocks import MIN_WIDTH, plan_levels
from .fingerprint import Fingerprint

CT_NAMES = ("ct",)
MR_NAMES = ("mr", "mri", "t1", "t2", "flair", "adc", "dwi", "pd", "t1w", "t2w", "t1gd", "t1c", "bold")
PATCH_VOXELS_3D = 112 * 112 * 80
PATCH_VOXELS_2D = 256 * 256
ANISOTROPY = 3.0  # coarsest / finest median spacing from which data counts as anisotropic
ZERO_BACKGROUND = 0.05  # share of exactly-zero voxels from which 0 is taken as the background
FEW_CASES = 5  # below this many labelled cases, none is held out for validation
# planned training steps from which nnU-Net's augmentation set is turned on: on DRIVE it cost 0.0068 Dice at
# about 1,000 planned steps and 0.0041 at 5,400; the loss, linear in log(steps), reaches 0 at about 73,000
# (benchmarks/augmentation.py, benchmarks/results/augmentation.md). nnU-Net trains 250,000 steps with it.
AUGMENT_FROM_STEPS = 73_000
# no deep supervision: on LA at 15 minutes (own-data path, 4 held-out cases, one run a side) the auxiliary heads
# cost 0.0235 Dice and 8.6 voxels of HD95, on DRIVE at 5 minutes they changed Dice by +0.0001
# (benchmarks/levers.py, benchmarks/results/levers.md); a step with them costs 16 % more on LA
NO_DEEP_SUPERVISION = ("off: it cost 0.0235 held-out Dice and 8.6 voxels of HD95 on LA at 15 min and gained "
                       "0.0001 on DRIVE at 5 min (benchmarks/results/levers.md)")
# one model rather than nnU-Net's fold ensemble: on LA at 15 minutes in all, three folds sharing the budget scored
# 0.638 held-out Dice against one model's 0.845, and took 1.36x the wall time with prediction
# (benchmarks/ensemble.py, benchmarks/results/ensemble.md): at a CPU budget a fold has not converged
ONE_MODEL = ("one model: 3 folds sharing 15 min scored 0.638 held-out Dice on LA against one model's 0.845 "
             "(benchmarks/results/ensemble.md); data.folds=5 trains nnU-Net's cross-validation and test.py "
             "averages the folds")


@dataclass(frozen=True)
class Choice:
    key: str  # dotted configuration key, e.g. data.modality
    value: Any
    reason: str


def plan_data(found: Fingerprint) -> list[Choice]:
    """Normalisation, foreground crop, target spacing, the validation split and one model (no folds)."""
    choices = _normalisation(found)
    spacings = found.spacings
    target = np.median(spacings, axis=0)
    same = np.allclose(spacings, spacings[0], rtol=1e-3)
    if same:
        choices.append(Choice("data.spacing", None, f"every case has spacing {_mm(spacings[0])}: no resampling"))
    else:
        coarse = target.max() / target.min() >= ANISOTROPY
        choices.append(Choice("data.spacing", [float(v) for v in target],
                              f"the median of spacings from {_mm(spacings.min(0))} to {_mm(spacings.max(0))}"
                              + ("; anisotropic, so the coarse axis keeps its own median" if coarse else "")))
    n = len(found.cases)
    if n < FEW_CASES:
        choices.append(Choice("data.val_fraction", 0.0, f"{n} labelled cases: too few to hold one out; "
                              "the last checkpoint is the result"))
    choices.append(Choice("train.decide_postprocessing", True, "flips, then per class largest component and hole "
                          "filling, each kept where it raises the validation Dice at the end of training (as nnU-Net "
                          "decides on cross-validation)" + ("; with no validation cases the flips stay on, the "
                                                            "others off" if n < FEW_CASES else "")))
    choices.append(Choice("data.folds", 0, ONE_MODEL))
    return choices


def _normalisation(found: Fingerprint) -> list[Choice]:
    names = [m.strip().lower() for m in found.modalities]
    fg = found.foreground
    zero_share = float(np.mean([c.zero_share for c in found.cases])) if found.cases else 0.0
    auto = names == ["image"] or all(n.startswith("channel ") for n in names)  # named by the reader, not the user
    declared = None if auto else "dataset.json says " + ", ".join(found.modalities)
    if len({n in CT_NAMES for n in names}) > 1:
        per_channel = ["CT" if n in CT_NAMES else "generic" for n in names]
        ct_fg = np.concatenate([found.channel_foreground(k) for k, m in enumerate(per_channel) if m == "CT"])
        return [Choice("data.modality", "generic", f"{declared}: each channel normalised by its own modality"),
                Choice("data.channel_modality", per_channel, "CT channels clipped to the window below and z-scored; "
                       "the others z-scored per image (a HU window would flatten them)"),
                *_ct_window(ct_fg, "the CT channels' labelled foreground"),
                Choice("data.crop_foreground", False, "channels disagree on what background is")]
    if any(n in CT_NAMES for n in names) or (declared is None and fg.size and np.percentile(fg, 0.5) < -500):
        why = declared or "foreground values below -500 look like Hounsfield units"
        return [Choice("data.modality", "CT", f"{why}: clip to a window, then z-score (nnU-Net's CT normalisation)"),
                *_ct_window(fg, "the labelled foreground"),
                Choice("data.crop_foreground", True, "crop to the body (> -500 HU) before sampling")]
    background = zero_share >= ZERO_BACKGROUND
    why = declared or f"no modality declared ({len(names)} channel(s))"
    if background:
        return [Choice("data.modality", "MR", f"{why}; {zero_share:.0%} of voxels are exactly 0: z-score per image "
                       "over the non-zero voxels (the body)"),
                Choice("data.crop_foreground", True, "crop to the non-zero region before sampling")]
    not_ct = "" if any(n in MR_NAMES for n in names) else " (not CT: no intensity window)"
    return [Choice("data.modality", "generic", f"{why}; no zero background: z-score per image{not_ct}"),
            Choice("data.crop_foreground", False, "no zero background to crop to (values of either sign)")]


def _ct_window(fg: np.ndarray, of: str) -> list[Choice]:
    """nnU-Net's CT normalisation of foreground sample ``fg``: clip to its 0.5-99.5 % percentiles, then
    z-score with its mean and std (the window's ends map onto their z-scores)."""
    low, high = (round(float(v), 2) for v in np.percentile(fg, [0.5, 99.5])) if fg.size else (-1000.0, 1000.0)
    mean, std = (float(fg.mean()), max(float(fg.std()), 1e-8)) if fg.size else (0.0, 1000.0)
    return [Choice("data.intensity_range", [low, high], f"the 0.5-99.5 % percentiles of {of}"),
            Choice("data.intensity_target", [round((low - mean) / std, 4), round((high - mean) / std, 4)],
                   f"the window's z-scores: (HU - {mean:.4g}) / {std:.4g}, the mean and std of {of}")]


def plan_network(found: Fingerprint, target_spacing: Any) -> list[Choice]:
    """Patch, pooling depth and widths of the residual UNet (without deep supervision), crops per step."""
    spacing = np.asarray(target_spacing if target_spacing is not None else np.median(found.spacings, axis=0))
    shape = np.median(found.shapes * found.spacings / spacing, axis=0)  # voxels on the target grid
    patch = _patch(shape, spacing, found.is_2d)
    depth = _depth(patch)
    widths = [16 * 2**i for i in range(depth)]
    fg_share = 1.0 - found.class_share().get(0, 1.0)
    pos = 0.67 if fg_share < 0.1 else 0.5
    return [
        Choice("train.patch_size", patch, _patch_reason(shape, patch, found.is_2d)),
        Choice("model.name", "resunet", "the residual UNet: 4-5x less time per step than the other families at the "
               "same widths (benchmarks/results/models_table.md), so more steps fit the budget"),
        Choice("model.channels", widths,
               f"{depth} levels: the longest patch axis pooled while it keeps >= {MIN_WIDTH} voxels "
               "(shorter axes stop earlier)"),
        Choice("model.deep_supervision", False, NO_DEEP_SUPERVISION),
        Choice("train.batch_size", 1, "one volume per step (the timed plan sets the crops per step)"),
        Choice("train.samples_per_volume", 2, "two crops per volume per step"),
        Choice("train.pos_fraction", pos, f"foreground is {fg_share:.1%} of voxels: "
               + ("two crops in three centred on it" if pos > 0.5 else "half the crops centred on it")),
        Choice("infer.overlap", 0.5, "half-window overlap: ~0.01 Dice over 0.25 on held-out left-atrium cases"),
        Choice("infer.blend", "gaussian", "windows weighted towards their centres where they overlap"),
        Choice("infer.tta", True, "mean of the flipped predictions (+0.0065 Dice on DRIVE's held-out images)"),
    ]


def _patch(shape: np.ndarray, spacing: np.ndarray, is_2d: bool) -> list[int]:
    """The largest patch within the voxel budget: the median shape, cut 10 % at a time along the axis
    that is longest in mm, then rounded to what the pooling plan divides: to the nearest (never past the
    image) when the budget cut it; up when the whole median image fits, so that a crop holds all of it,
    padded (as nnU-Net plans small images)."""
    whole = np.maximum(np.ceil(shape), 1).astype(float)
    patch = whole.copy()
    if is_2d:
        patch[2] = 1
    budget = PATCH_VOXELS_2D if is_2d else PATCH_VOXELS_3D
    while np.prod(patch) > budget:
        axis = int(np.argmax(np.where(patch > 1, patch * spacing, -1)))
        patch[axis] = max(1.0, np.floor(patch[axis] * 0.9))
    depth = _depth(patch)
    factors = [_pool_factor(int(s), depth) for s in patch]
    small = bool(np.all(patch == whole))  # the whole median image fits: round up and pad
    rounded = [_round_up(s, f) if small else _round(s, f, shape[a]) for a, (s, f) in enumerate(zip(patch, factors))]
    while np.prod(rounded) > budget * 1.1:  # rounding up may overshoot: take one step off the longest axis
        axis = int(np.argmax([r * sp if f < r else -1 for r, sp, f in zip(rounded, spacing, factors)]))
        rounded[axis] -= factors[axis]
    plan_levels(tuple(rounded), depth)  # the network's own rule: raises if the rounding missed it
    return rounded


def _patch_reason(shape: np.ndarray, patch: list[int], is_2d: bool) -> str:
    if all(p >= s for p, s in zip(patch, np.ceil(shape))):
        return (f"the median shape {_vox(shape)} rounded up for pooling: each crop holds a whole median image "
                "(smaller ones are padded)")
    return (f"the median shape {_vox(shape)} shrunk along its longest axis (in mm) to at most "
            f"{PATCH_VOXELS_2D if is_2d else PATCH_VOXELS_3D:,} voxels, divisible for pooling")


def _round(size: float, factor: int, limit: float) -> int:
    """``size`` to the nearest multiple of ``factor``, down when up would pass the image (``limit``)."""
    if size <= 1:
        return 1
    up = int(round(size / factor)) * factor
    return max(factor, up if up <= limit else int(size // factor) * factor)


def _round_up(size: float, factor: int) -> int:
    """``size`` up to a multiple of ``factor`` (1 stays 1: a flat axis)."""
    return 1 if size <= 1 else int(np.ceil(size / factor)) * factor


def _pool_factor(size: int, depth: int) -> int:
    """How often ``models3d`` pools an axis of ``size`` voxels in a ``depth``-level network, as a factor."""
    n = 0
    while n < depth - 1 and size / 2 ** (n + 1) >= MIN_WIDTH:
        n += 1
    return 2**n


def _depth(patch) -> int:
    """Levels (at most 5) such that the longest axis is still pooled at each."""
    longest = max(patch)
    return int(min(5, max(2, 1 + np.floor(np.log2(longest / MIN_WIDTH)))))


def _mm(values) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values) + " mm"


def _vox(values) -> str:
    return " x ".join(str(int(round(float(v)))) for v in values)


def augmentation(on: bool, is_2d: bool) -> dict[str, float]:
    """nnU-Net's augmentation as configuration keys: its probabilities of rotation and scaling, noise, blur,
    brightness, contrast, low resolution and gamma (flips are always on), or every probability 0."""
    probs = {"train.affine_prob": 0.2, "train.noise_prob": 0.1, "train.blur_prob": 0.2, "train.intensity_prob": 0.15,
             "train.contrast_prob": 0.15, "train.low_res_prob": 0.25, "train.gamma_prob": 0.3}
    if not on:
        return {key: 0.0 for key in probs}
    return {**probs, "train.rotate_degrees": 180.0 if is_2d else 30.0, "train.scale_range": 0.3}


def plan_augmentation(steps: int, is_2d: bool) -> list[Choice]:
    """``augmentation`` on for a run of at least ``AUGMENT_FROM_STEPS`` steps, else off: on a short budget
    the network has not yet fitted the plain crops, and augmentation slows that down."""
    on = steps >= AUGMENT_FROM_STEPS
    why = (f"{steps:,} planned steps, at least the {AUGMENT_FROM_STEPS:,} from which augmentation is expected to "
           "pay (benchmarks/results/augmentation.md): nnU-Net's probabilities" if on else
           f"{steps:,} planned steps, fewer than the {AUGMENT_FROM_STEPS:,} from which augmentation is expected to "
           "pay (it cost Dice at 1,000 and 5,400 on DRIVE, benchmarks/results/augmentation.md): off, flips only")
    reasons = {"train.rotate_degrees": "nnU-Net's rotation range" + (" in the plane of a 2D image" if is_2d else ""),
               "train.scale_range": "scaling by 0.7-1.3 (nnU-Net: 0.7-1.4)"}
    return [Choice(key, value, reasons.get(key, why)) for key, value in augmentation(on, is_2d).items()]
