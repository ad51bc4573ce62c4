"""Crops per training step from a voxels-per-step target, timed on this machine.

A step of two crops of a small patch (two of 32 x 48 x 32: 98,000 voxels) can spend much of its time on
what every step costs whatever its size: the optimizer over all weights, each layer's launch, the loss.
nnU-Net trains such data with batches of 9 and more. The plan doubles the crops of a step while they hold
at most as many voxels as two full-size crops (``step_voxels``) and the time per voxel, timed here, drops
by at least ``GAIN``: a large patch stays at one volume and two crops, a small one gets several volumes a
step where the machine rewards it. On the 2-core CPU measured, a 40 x 40 x 40 step is already
compute-bound and the plan keeps one volume and two crops (``benchmarks/results/crops_per_step.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .choices import PATCH_VOXELS_2D, PATCH_VOXELS_3D, Choice

GAIN = 0.10  # a doubling must cut the time per voxel by this much to be kept


def step_voxels(is_2d: bool) -> int:
    """The voxels-per-step target: two crops of the full-size patch."""
    return 2 * (PATCH_VOXELS_2D if is_2d else PATCH_VOXELS_3D)


def crops_per_step(crops: int, train_cases: int) -> tuple[int, int]:
    """(volumes, crops of each) for a step of about ``crops`` crops: half as many volumes, as far as there are."""
    volumes = max(1, min(crops // 2, train_cases))
    return volumes, math.ceil(crops / volumes)


def plan_crops(patch: Sequence[int], is_2d: bool, train_cases: int,
               seconds_at: Callable[[int, int], float]) -> tuple[list[Choice], float]:
    """(``train.batch_size`` and ``train.samples_per_volume`` with their reasons, the chosen step's seconds);
    ``seconds_at(volumes, crops_per_volume)`` times a step."""
    voxels, target = math.prod(patch), step_voxels(is_2d)
    nominal, step = 2, crops_per_step(2, train_cases)
    seconds = seconds_at(*step)
    timed = [f"{seconds:.3f} s at {math.prod(step)}"]
    while math.prod(bigger := crops_per_step(2 * nominal, train_cases)) * voxels <= target:
        more = seconds_at(*bigger)
        timed.append(f"{more:.3f} s at {math.prod(bigger)}")
        if more / math.prod(bigger) > (1 - GAIN) * seconds / math.prod(step):
            break
        nominal, step, seconds = 2 * nominal, bigger, more
    crops = math.prod(step)
    reason = (f"{crops} crops of {voxels:,} voxels per step ({crops * voxels:,}; the target is {target:,}, two "
              f"full-size crops), the most whose time per voxel still fell by {GAIN:.0%} a doubling: "
              f"{', '.join(timed)} crops per step (timed here), {crops * voxels / seconds / 1e6:.2f} M voxels/s")
    return [Choice("train.batch_size", step[0], reason),
            Choice("train.samples_per_volume", step[1], f"{step[1]} crops of each of {step[0]} "
                   f"volume{'s' if step[0] > 1 else ''} per step")], seconds
