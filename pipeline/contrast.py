"""Contrast-limited adaptive histogram equalisation (CLAHE) for fundus photographs.

Illumination varies across a fundus photograph's field of view; CLAHE (scikit-image's
``equalize_adapthist``) evens it out slice by slice before intensity normalisation.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.exposure import equalize_adapthist


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
