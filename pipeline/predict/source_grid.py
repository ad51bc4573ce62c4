"""Putting a prediction made on the network's grid back on the source's own voxel grid.

The deterministic transforms (reorientation, resampling, crop, pad) are recorded
on the MetaTensor, so MONAI's ``Invertd`` undoes them. On the native grid the
label map is inverted with nearest-neighbour steps; after resampling
(``data.spacing``) the probabilities are resampled linearly and the label map is
their argmax on the source grid, as nnU-Net exports, rather than a blocky
nearest-neighbour copy of a label map from the other grid.
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from ..data.transforms import IMAGE


def to_source_grid(logits: torch.Tensor, data: dict, pre: Compose, resampled: bool,
                   probabilities: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label map (1, x, y, z) uint8 on the source grid and, with ``probabilities``, the softmax
    (K, x, y, z) there. ``logits`` (1, K, H, W, D) on the network grid of ``data[IMAGE]``."""
    if resampled:
        return _argmax_of_resampled(torch.softmax(logits, dim=1)[0].cpu(), data, pre, probabilities)
    if not probabilities:
        return label_to_source_grid(logits.argmax(dim=1).to(torch.uint8).cpu(), data, pre), None
    item = {**data, "pred": _like(logits.argmax(dim=1).to(torch.uint8).cpu(), data[IMAGE])}  # (1, H, W, D)
    keys, nearest = ["pred"], [True]
    if probabilities:
        item["prob"] = _like(torch.softmax(logits, dim=1)[0].cpu(), data[IMAGE])  # (K, H, W, D)
        keys, nearest = keys + ["prob"], nearest + [False]
    inverted = Invertd(keys, transform=pre, orig_keys=IMAGE, nearest_interp=nearest)(item)
    label = inverted["pred"].as_tensor().round().to(torch.uint8)
    return label, _background_outside(inverted["prob"].as_tensor().float()) if probabilities else None


def label_to_source_grid(label: torch.Tensor, data: dict, pre: Compose) -> torch.Tensor:
    """A label map (1, H, W, D) uint8 on the network grid of ``data[IMAGE]`` (native spacing), put
    back on the source grid (nearest neighbour): (1, x, y, z) uint8."""
    invert = Invertd("pred", transform=pre, orig_keys=IMAGE, nearest_interp=True)
    inverted = invert({**data, "pred": _like(label, data[IMAGE])})
    return inverted["pred"].as_tensor().round().to(torch.uint8)


def _background_outside(prob: torch.Tensor) -> torch.Tensor:
    """Voxels the network never saw (outside the foreground crop, padded with zeros by the
    inversion) are background with probability 1, so every voxel's probabilities sum to 1."""
    prob[0][prob.sum(dim=0) == 0] = 1.0
    return prob


def _argmax_of_resampled(probs: torch.Tensor, data: dict, pre: Compose,
                         keep: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Argmax (1, x, y, z) of the probabilities ``probs`` (K, H, W, D) resampled linearly to the source
    grid one class at a time, so memory holds two source-grid volumes rather than K; with ``keep``
    also the (K, x, y, z) probabilities."""
    best, label, kept = None, None, []
    for k in range(probs.shape[0]):
        item = {**data, "prob": _like(probs[k : k + 1], data[IMAGE])}
        invert = Invertd("prob", transform=pre, orig_keys=IMAGE, nearest_interp=False)
        channel = invert(item)["prob"].as_tensor().float()
        if best is None:
            best, label = channel.clone(), torch.zeros(channel.shape, dtype=torch.uint8)
        else:
            label[channel > best] = k
            torch.maximum(best, channel, out=best)
        if keep:
            kept.append(channel)
    return label, _background_outside(torch.cat(kept)) if keep else None


def _like(values: torch.Tensor, image: MetaTensor) -> MetaTensor:
    """``values`` with the image's metadata and transform history, so ``Invertd`` can undo them."""
    return MetaTensor(values, meta=image.meta, applied_operations=image.applied_operations)
