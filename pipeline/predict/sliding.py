"""Blended sliding-window logits of a whole volume, with test-time flips (MONAI ``sliding_window_inference``).

``Predictor`` (``predictor.py``) is the one caller: validation, ``test.py`` and the
benchmarks all predict through it."""

from __future__ import annotations

import itertools
import logging

import torch
from monai.inferers import sliding_window_inference
from ..config import InferConfig
from .engines import Engine

log = logging.getLogger(__name__)


def predict_volume(
    engine: Engine,
    image: torch.Tensor,
    roi_size: tuple[int, int, int],
    infer: InferConfig,
    stitch_device: torch.device | None = None,
) -> torch.Tensor:
    """Logits of a whole volume by blended sliding windows (ROI = the training patch).

    image: (B, C, H, W, D) on the engine's device; returns (B, K, H, W, D) float32
    logits on ``stitch_device`` (default: the engine's device), with ``infer.tta``
    the mean over every flip of the volume (as nnU-Net mirrors): argmax them for
    labels, softmax them only when probabilities are needed, so large volumes
    hold one K-channel buffer. When stitching on a GPU runs out of memory, the
    windows still run on the GPU and are stitched on the CPU (said in the log).
    """
    device = engine.device
    stitch_device = stitch_device or device
    with torch.inference_mode():
        logits, passes = None, flip_dims(roi_size, tta=infer.tta)
        for dims in passes:
            flipped = image.flip(dims) if dims else image
            try:
                out = _sliding_window(engine, flipped, roi_size, infer, device, stitch_device)
            except torch.OutOfMemoryError:
                if stitch_device.type == "cpu":
                    raise
                log.warning("out of memory stitching a %s volume on %s: stitching on the CPU instead",
                            tuple(image.shape[2:]), stitch_device)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                stitch_device = torch.device("cpu")
                out = _sliding_window(engine, flipped, roi_size, infer, device, stitch_device)
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


def _sliding_window(engine: Engine, image, roi_size, infer: InferConfig, device, stitch_device) -> torch.Tensor:
    return sliding_window_inference(
        image, roi_size=roi_size, sw_batch_size=infer.sw_batch_size, predictor=engine, overlap=infer.overlap,
        mode=infer.blend, progress=False, sw_device=device, device=stitch_device,
    )
