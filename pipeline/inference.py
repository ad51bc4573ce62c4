"""The one inference path: ``predict_volume`` (sliding window), used by validation,
``test.py`` and batch jobs, and ``predict_case`` which puts the prediction back on
the input's own grid."""

from __future__ import annotations

import logging

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from .config import InferConfig
from .runtime import autocast

log = logging.getLogger(__name__)


def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: tuple[int, int, int],
    infer: InferConfig,
    amp_dtype: torch.dtype | None = None,
    stitch_device: torch.device | None = None,
) -> torch.Tensor:
    """Logits of a whole volume by blended sliding windows (ROI = the training patch).

    image: (B, C, H, W, D) on the model's device; returns (B, K, H, W, D) float32
    logits on ``stitch_device`` (default: the model's device): argmax them for
    labels, softmax them only when probabilities are needed, so large volumes
    hold one K-channel buffer. When stitching on a GPU runs out of memory, the
    windows still run on the GPU and are stitched on the CPU (said in the log).
    """
    device = next(model.parameters()).device
    stitch_device = stitch_device or device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, amp_dtype):
            try:
                logits = _sliding_window(model, image, roi_size, infer, device, stitch_device)
            except torch.OutOfMemoryError:
                if stitch_device.type == "cpu":
                    raise
                log.warning("out of memory stitching a %s volume on %s: stitching on the CPU instead",
                            tuple(image.shape[2:]), stitch_device)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                logits = _sliding_window(model, image, roi_size, infer, device, torch.device("cpu"))
        return logits.float()
    finally:
        model.train(was_training)


def _sliding_window(model, image, roi_size, infer: InferConfig, device, stitch_device) -> torch.Tensor:
    return sliding_window_inference(
        image, roi_size=roi_size, sw_batch_size=infer.sw_batch_size, predictor=model, overlap=infer.overlap,
        mode=infer.blend, progress=False, sw_device=device, device=stitch_device,
    )
