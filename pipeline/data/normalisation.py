"""Intensity normalisation, one rule for every path: the in-memory transforms, the slab reader of
volumes larger than memory, and the model package.

``Normalisation.from_config(cfg.data)`` is made once with its numbers; each channel follows its
modality (``data.channel_modality``, else ``data.modality`` for every channel):

- ``CT``: clipped to the window ``intensity_range`` (HU) and mapped linearly onto
  ``intensity_target`` (nnU-Net's CT normalisation when the target is the window's z-scores);
- ``MR``: z-scored over the non-zero voxels (the body), which stay 0;
- ``generic``: z-scored over every voxel.

A z-score's mean and standard deviation come from the whole image as read (population
statistics, as MONAI's ``NormalizeIntensity``), whether the image is held in memory
(``statistics``) or streamed slab by slab (``slab_statistics``): the foreground crop of the
in-memory path does not change them, so one case gets one normalisation whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import DataConfig
from ..errors import UserError

MODALITIES = ("CT", "MR", "generic")
Moments = tuple[tuple[float, float], ...]  # per channel (mean, std); (0, 1) for CT channels


@dataclass(frozen=True)
class Normalisation:
    """Per-channel intensity normalisation with its numbers (see the module docstring)."""

    modalities: tuple[str, ...] | None  # one per channel, or None: ``modality`` for every channel
    modality: str = "CT"
    window: tuple[float, float] = (-200.0, 300.0)  # CT: clipped to this (HU)
    target: tuple[float, float] = (0.0, 1.0)  # CT: what the window's ends map to

    @classmethod
    def from_config(cls, d: DataConfig) -> Normalisation:
        return cls(tuple(d.channel_modality) if d.channel_modality else None, d.modality,
                   tuple(map(float, d.intensity_range)), tuple(map(float, d.intensity_target)))

    def to_dict(self) -> dict:
        """The record a model package keeps (plain JSON data)."""
        return asdict(self)

    def of_channel(self, channel: int) -> str:
        return self.modalities[channel] if self.modalities else self.modality

    def check_channels(self, channels: int) -> None:
        """UserError unless ``data.channel_modality`` (when set) names one modality per channel."""
        if self.modalities and channels != len(self.modalities):
            raise UserError(f"data.channel_modality names {len(self.modalities)} channel(s) but the images have "
                            f"{channels}: give one modality per channel")

    def statistics(self, image: np.ndarray) -> Moments:
        """Per-channel (mean, std) of ``image`` (C, ..., D) for its z-scored channels, summed 16 slices at a
        time (float64 temporaries of a slab, not of the image)."""
        return self.slab_statistics((image[..., z : z + 16] for z in range(0, image.shape[-1], 16)), image.shape[0])

    def slab_statistics(self, slabs: Iterable[np.ndarray], channels: int) -> Moments:
        """The same from slabs (C, ..., n) that together form the image, accumulated in float64."""
        self.check_channels(channels)
        n, total, squares = np.zeros(channels), np.zeros(channels), np.zeros(channels)
        for slab in slabs:
            for c in range(channels):
                if self.of_channel(c) == "CT":
                    continue
                values = slab[c][slab[c] != 0] if self.of_channel(c) == "MR" else slab[c].ravel()
                values = values.astype(np.float64)
                n[c], total[c], squares[c] = n[c] + values.size, total[c] + values.sum(), squares[c] + (values**2).sum()
        mean = total / np.maximum(n, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(n, 1) - mean**2, 0.0))
        return tuple((float(m), float(s) if s > 0 else 1.0) if self.of_channel(c) != "CT" else (0.0, 1.0)
                     for c, (m, s) in enumerate(zip(mean, std)))

    def run(self, image: np.ndarray, moments: Moments) -> np.ndarray:
        """``image`` (C, ...) normalised, as float32 (a new array)."""
        self.check_channels(image.shape[0])
        out = np.empty(image.shape, dtype=np.float32)
        for c in range(image.shape[0]):
            out[c] = image[c]
            modality = self.of_channel(c)
            if modality == "CT":  # MONAI ScaleIntensityRange's order of operations, so its float32 values
                (low, high), (t_low, t_high) = self.window, self.target
                out[c] -= low
                out[c] /= high - low
                out[c] *= t_high - t_low
                out[c] += t_low
                np.clip(out[c], t_low, t_high, out=out[c])
            else:
                mean, std = moments[c]
                out[c] -= mean
                out[c] /= std
                if modality == "MR":
                    out[c][image[c] == 0] = 0.0  # the body only: the background stays 0
        return out


MOMENTS = "normalisation_moments"  # where the in-memory path keeps the whole image's moments (MetaTensor meta)


def record_moments(image: torch.Tensor, normalisation: Normalisation) -> torch.Tensor:
    """``image`` (C, ...) with its moments recorded in its metadata, before the foreground crop: the crop
    then does not change the statistics (as the slab reader, which never crops, computes them)."""
    image.meta[MOMENTS] = normalisation.statistics(image.detach().cpu().numpy())
    return image


def normalise_tensor(image: torch.Tensor, normalisation: Normalisation) -> torch.Tensor:
    """``image`` (C, ...) normalised (a MetaTensor keeps its metadata), with the moments
    ``record_moments`` left in its metadata, else its own."""
    array = image.detach().cpu().numpy()
    moments = getattr(image, "meta", {}).pop(MOMENTS, None) or normalisation.statistics(array)
    out = image.detach().clone().float()
    out.copy_(torch.from_numpy(normalisation.run(array, moments)))
    return out
