"""MONAI dictionary transforms: one deterministic (cacheable) part, one random part.

Deterministic: load (any format, through ``PipelineReader``), channel first, RAS
orientation, optional resampling, crop to the body, intensity normalisation (CT
window, MR z-score over the body, generic z-score), pad to the patch,
and, for training, foreground/background voxel indices for the crop sampler.
Random: ``RandCropByPosNegLabeld`` patches (foreground-oversampled), flips on every
axis the patch has, and, where the config turns them on, rotation/scaling
(``RandAffined``), intensity scale and shift, and gamma. All deterministic steps
are invertible, so ``Invertd`` puts a prediction back on the input's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai import transforms as mt

from .config import Config
from .contrast import clahe_tensor
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
    if d.contrast == "clahe":  # after the crop: equalisation lifts the black border above zero
        steps.append(mt.Lambdad(IMAGE, func=clahe_tensor))
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
    if t.affine_prob > 0:
        steps.append(random_affine(t.patch_size, t.affine_prob, t.rotate_degrees, t.scale_range))
    if t.intensity_prob > 0:
        steps.append(mt.RandScaleIntensityd(IMAGE, factors=0.1, prob=t.intensity_prob))
        steps.append(mt.RandShiftIntensityd(IMAGE, offsets=0.1, prob=t.intensity_prob))
    if t.gamma_prob > 0:
        steps.append(mt.RandAdjustContrastd(IMAGE, gamma=(0.7, 1.5), prob=t.gamma_prob))
    steps.append(mt.DeleteItemsd([FG, BG]))
    return steps


def random_affine(patch_size: Sequence[int], prob: float, degrees: float, scale: float) -> mt.RandAffined:
    """Rotation by up to ``degrees`` in every plane the patch spans (in-plane only for a single
    slice) and isotropic-per-axis scaling by up to ``scale``; borders are reflected."""
    spans = [size > 1 for size in patch_size]
    angle = np.deg2rad(degrees)
    # MONAI's rotate_range is (about axis 0, about axis 1, about axis 2): a rotation about an axis
    # turns the plane of the other two, so it is allowed when both of those axes have extent.
    rotate = [angle if all(spans[j] for j in range(3) if j != i) else 0.0 for i in range(3)]
    return mt.RandAffined(
        [IMAGE, LABEL], prob=prob, rotate_range=rotate, scale_range=[scale if s else 0.0 for s in spans],
        mode=("bilinear", "nearest"), padding_mode="reflection", cache_grid=True, spatial_size=tuple(patch_size),
    )


def build_transforms(cfg: Config, train: bool, keys: Sequence[str] = (IMAGE, LABEL)) -> mt.Compose:
    """The full chain: deterministic only (validation, inference) or with the random part (training)."""
    steps = deterministic_transforms(cfg, keys, sampler_indices=train)
    if train:
        steps += random_transforms(cfg)
    return mt.Compose(steps)
