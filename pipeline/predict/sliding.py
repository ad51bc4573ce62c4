"""Blended sliding-window logits of a whole volume, with test-time flips (MONAI ``SlidingWindowInfererAdapt``).

``Predictor`` (``predictor.py``) is the one caller: validation, ``test.py`` and the
benchmarks all predict through it."""

from __future__ import annotations

import itertools

import torch
from monai.inferers import SlidingWindowInfererAdapt

from ..config import InferConfig
from .engines import Engine


def predict_volume(engine: Engine, image: torch.Tensor, roi_size: tuple[int, int, int],
                   infer: InferConfig) -> torch.Tensor:
    """Logits of a whole volume by blended sliding windows (ROI = the training patch).

    image: (B, C, H, W, D) on the engine's device; returns (B, K, H, W, D) float32
    logits, with ``infer.tta`` the mean over every flip of the volume (as nnU-Net
    mirrors): argmax them for labels, softmax them only when probabilities are
    needed, so large volumes hold one K-channel buffer. Stitching on a GPU that
    runs out of memory falls back to buffered, then CPU stitching, the windows
    still running on the GPU (MONAI ``SlidingWindowInfererAdapt``, which logs it);
    the logits are then on the CPU.
    """
    inferer = SlidingWindowInfererAdapt(
        roi_size, sw_batch_size=infer.sw_batch_size, overlap=infer.overlap, mode=infer.blend, sw_device=engine.device)
    with torch.inference_mode():
        logits, passes = None, flip_dims(roi_size, tta=infer.tta)
        for dims in passes:
            out = inferer(image.flip(dims) if dims else image, engine)
            out = out.float().flip(dims) if dims else out.float()
            logits = out if logits is None else logits.to(out.device).add_(out)
        return logits.div_(len(passes))


def flip_dims(roi_size: tuple[int, int, int], tta: bool) -> list[tuple[int, ...]]:
    """Tensor dims to flip for each test-time pass: () alone without ``tta``, else every subset
    of the spatial axes the patch spans (a single-slice axis is never flipped)."""
    if not tta:
        return [()]
    axes = [2 + i for i, size in enumerate(roi_size) if size > 1]
    return [dims for r in range(len(axes) + 1) for dims in itertools.combinations(axes, r)]
