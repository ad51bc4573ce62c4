"""MONAI dictionary transforms: one deterministic (cacheable) part, one random part.

Deterministic: load (any format, through ``PipelineReader``), channel first, RAS
orientation, optional resampling, crop to the body, intensity normalisation (CT
window, MR z-score over the body, generic z-score), pad to the patch,
and, for training, foreground/background voxel indices for the crop sampler.
Random: ``RandCropByPosNegLabeld`` patches and flips on every axis the patch has.
All deterministic steps are invertible, so ``Invertd`` puts a prediction back
on the input's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai import transforms as mt

from .config import Config
from .readers import PipelineReader

IMAGE, LABEL = "image", "label"
FG, BG = "label_fg_indices", "label_bg_indices"


def body_ct(x: np.ndarray) -> np.ndarray:
    """Body voxels of a CT volume: denser than -500 HU (air and lung excluded)."""
    return x > -500


def body_positive(x: np.ndarray) -> np.ndarray:
    """Body voxels of an MR volume: any signal."""
    return x > 0


def deterministic_transforms(cfg: Config, keys: Sequence[str] = (IMAGE, LABEL), sampler_indices: bool = False) -> list:
    """Load and preprocess; ``sampler_indices`` adds the crop sampler's foreground/background indices."""
    keys = list(keys)
    d = cfg.data
    readers = {
        IMAGE: PipelineReader(h5_key=d.h5_image_key, channel=d.channel, spacing=d.default_spacing),
        LABEL: PipelineReader(h5_key=d.h5_label_key, spacing=d.default_spacing, label=True),
    }
    steps: list = [mt.LoadImaged(key, reader=readers[key], image_only=True, ensure_channel_first=True) for key in keys]
    steps.append(mt.Orientationd(keys, axcodes="RAS", labels=None))
    if cfg.data.spacing is not None:
        steps.append(mt.Spacingd(keys, pixdim=cfg.data.spacing, mode=["bilinear", "nearest"][: len(keys)]))
    ct = d.modality == "CT"
    if d.crop_foreground:
        steps.append(mt.CropForegroundd(keys, source_key=IMAGE, select_fn=body_ct if ct else body_positive,
                                        margin=2, allow_smaller=True))
    if ct:
        low, high = d.intensity_range
        steps.append(mt.ScaleIntensityRanged(IMAGE, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:  # MR: statistics over the body (non-zero voxels); generic (photos, microscopy): whole image
        steps.append(mt.NormalizeIntensityd(IMAGE, nonzero=d.modality == "MR", channel_wise=True))
    steps.append(mt.SpatialPadd(keys, spatial_size=cfg.train.patch_size))
    steps.append(mt.EnsureTyped(keys, dtype=None))
    if sampler_indices:
        steps.append(mt.FgBgToIndicesd(LABEL, fg_postfix="_fg_indices", bg_postfix="_bg_indices"))
    return steps


def random_transforms(cfg: Config) -> list:
    """Patch sampling and flips, applied per step to the cached volumes."""
    t = cfg.train
    steps: list = [
        mt.RandCropByPosNegLabeld(
            [IMAGE, LABEL], label_key=LABEL, spatial_size=t.patch_size,
            pos=t.pos_fraction, neg=1.0 - t.pos_fraction, num_samples=t.samples_per_volume,
            fg_indices_key=FG, bg_indices_key=BG,
        ),
    ]
    for axis, size in enumerate(t.patch_size):
        if size > 1 and t.flip_prob > 0:
            steps.append(mt.RandFlipd([IMAGE, LABEL], prob=t.flip_prob, spatial_axis=axis))
    steps.append(mt.DeleteItemsd([FG, BG]))
    return steps


def build_transforms(cfg: Config, train: bool, keys: Sequence[str] = (IMAGE, LABEL)) -> mt.Compose:
    """The full chain: deterministic only (validation, inference) or with the random part (training)."""
    steps = deterministic_transforms(cfg, keys, sampler_indices=train)
    if train:
        steps += random_transforms(cfg)
    return mt.Compose(steps)
