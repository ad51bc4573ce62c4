"""MONAI dictionary transforms: one deterministic (cacheable) part, one random part.

Deterministic: load (any format, through ``PipelineReader``), channel first, RAS
orientation, optional resampling, crop to the body, intensity normalisation (CT
window, MR z-score over the body, generic z-score), pad to the patch,
and, for training, foreground/background voxel indices for the crop sampler.
Random: ``RandCropByPosNegLabeld`` patches (foreground-oversampled), flips on every
axis the patch has, and, where the config turns them on, rotation/scaling
(``RandAffined``) and nnU-Net's intensity set: noise, blur, brightness, contrast,
simulated low resolution and gamma. All deterministic steps
are invertible, so ``Invertd`` puts a prediction back on the input's own grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from monai import transforms as mt

from skimage.exposure import equalize_adapthist

from ..config import Config, TrainConfig
from .io import reader_options
from .monai_reader import PipelineReader, quiet_default_readers
from .normalisation import Normalisation, normalise_tensor, record_moments

IMAGE, LABEL = "image", "label"
FG, BG = "label_fg_indices", "label_bg_indices"


def body_ct(x: np.ndarray) -> np.ndarray:
    """Body voxels of a CT volume: denser than -500 HU (air and lung excluded)."""
    return x > -500


def body_positive(x: np.ndarray) -> np.ndarray:
    """Body voxels of an MR volume: any signal."""
    return x > 0


def clahe(image: np.ndarray, clip_limit: float = 0.01) -> np.ndarray:
    """CLAHE of each channel and slice of a (C, H, W, D) image, to float32 in [0, 1].

    Each (H, W) slice is first rescaled to [0, 1] by its own range (a constant slice becomes 0).
    """
    out = np.zeros(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        for z in range(image.shape[-1]):
            plane = image[c, ..., z].astype(np.float64)
            low, high = plane.min(), plane.max()
            if high > low:
                out[c, ..., z] = equalize_adapthist((plane - low) / (high - low), clip_limit=clip_limit)
    return out


def clahe_tensor(image: torch.Tensor) -> torch.Tensor:
    """``clahe`` of a (C, H, W, D) tensor; a MetaTensor keeps its metadata."""
    out = image.detach().clone().float()
    out.copy_(torch.from_numpy(clahe(image.detach().cpu().numpy())))
    return out


def load_steps(cfg: Config, keys: Sequence[str] = (IMAGE, LABEL)) -> list:
    """Read each key's file into a channel-first MetaTensor (any supported format)."""
    readers = {IMAGE: PipelineReader(**reader_options(cfg.data)),
               LABEL: PipelineReader(**reader_options(cfg.data, label=True))}
    with quiet_default_readers():
        return [mt.LoadImaged(key, reader=readers[key], image_only=True, ensure_channel_first=True) for key in keys]


def preprocess_steps(cfg: Config, keys: Sequence[str] = (IMAGE, LABEL), sampler_indices: bool = False) -> list:
    """Reorient, resample, crop, normalise and pad loaded volumes; ``sampler_indices`` adds the
    crop sampler's foreground/background voxel indices. Every step is invertible."""
    keys = list(keys)
    d = cfg.data
    steps: list = [mt.Orientationd(keys, axcodes="RAS", labels=None)]
    if cfg.data.spacing is not None:
        steps.append(mt.Spacingd(keys, pixdim=cfg.data.spacing, mode=["bilinear", "nearest"][: len(keys)]))
    ct = d.modality == "CT"
    normalisation = Normalisation.from_config(d)
    if d.contrast == "none":  # the statistics of the whole image, as the slab reader takes them
        steps.append(mt.Lambdad(IMAGE, func=partial(record_moments, normalisation=normalisation)))
    if d.crop_foreground:
        steps.append(mt.CropForegroundd(keys, source_key=IMAGE, select_fn=body_ct if ct else body_positive,
                                        margin=2, allow_smaller=True))
    if d.contrast == "clahe":  # after the crop: equalisation lifts the black border above zero
        steps.append(mt.Lambdad(IMAGE, func=clahe_tensor))
    steps.append(mt.Lambdad(IMAGE, func=partial(normalise_tensor, normalisation=normalisation)))  # picklable
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
    steps += intensity_transforms(t)
    steps.append(mt.DeleteItemsd([FG, BG]))
    return steps


def intensity_transforms(t: TrainConfig) -> list:
    """The image-only augmentations the config turns on, in nnU-Net's order: noise, blur, brightness
    (scale and shift), contrast, low resolution, gamma. Ranges are nnU-Net's, in z-scored units."""
    spans = [size > 1 for size in t.patch_size]
    sigma = [(0.5, 1.0) if s else (0.0, 0.0) for s in spans]  # a flat axis is not blurred
    steps: list = []
    if t.noise_prob > 0:
        steps.append(mt.RandGaussianNoised(IMAGE, prob=t.noise_prob, std=0.1))  # std drawn from [0, 0.1]
    if t.blur_prob > 0:
        steps.append(mt.RandGaussianSmoothd(IMAGE, *sigma, prob=t.blur_prob))
    if t.intensity_prob > 0:
        steps.append(mt.RandScaleIntensityd(IMAGE, factors=0.1, prob=t.intensity_prob))
        steps.append(mt.RandShiftIntensityd(IMAGE, offsets=0.1, prob=t.intensity_prob))
    if t.contrast_prob > 0:
        steps.append(mt.RandScaleIntensityFixedMeand(IMAGE, factors=0.25, preserve_range=True, prob=t.contrast_prob))
    if t.low_res_prob > 0:
        steps.append(mt.RandSimulateLowResolutiond(IMAGE, prob=t.low_res_prob, zoom_range=(0.5, 1.0)))
    if t.gamma_prob > 0:
        steps.append(mt.RandAdjustContrastd(IMAGE, gamma=(0.7, 1.5), prob=t.gamma_prob))
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
    """The full chain from files: deterministic only (validation) or with the random part (training)."""
    steps = load_steps(cfg, keys) + preprocess_steps(cfg, keys, sampler_indices=train)
    if train:
        steps += random_transforms(cfg)
    return mt.Compose(steps)


def preprocess_transforms(cfg: Config, keys: Sequence[str] = (IMAGE,)) -> mt.Compose:
    """The deterministic chain for volumes already loaded (``monai_reader.to_meta_tensor``): inference."""
    return mt.Compose(preprocess_steps(cfg, keys))
