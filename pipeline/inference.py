"""The one inference path: ``predict_volume`` (sliding window), used by validation,
``test.py`` and batch jobs, and ``predict_case`` which puts the prediction back on
the input's own grid."""

from __future__ import annotations

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from .config import InferConfig
from .runtime import autocast


def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: tuple[int, int, int],
    infer: InferConfig,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Logits of a whole volume by blended sliding windows (ROI = the training patch).

    image: (B, C, H, W, D) on the model's device; returns (B, K, H, W, D) float32
    logits on the same device: argmax them for labels, softmax them (in place)
    only when probabilities are needed, so large volumes hold one K-channel buffer.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, amp_dtype):
            logits = sliding_window_inference(
                image.to(device), roi_size=roi_size, sw_batch_size=infer.sw_batch_size, predictor=model,
                overlap=infer.overlap, mode=infer.blend, progress=False,
            )
        return logits.float()
    finally:
        model.train(was_training)
