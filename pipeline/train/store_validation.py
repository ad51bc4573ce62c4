"""Validation of a lazy store during training: the Dice of its prediction, predicted and counted slab by slab."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data.store import VolumeStore
from ..evaluate.rows import MetricOptions
from ..evaluate.slabs import tally_slabs
from ..predict.predictor import Predictor
from ..predict.streamed import stream_logits


def store_dice(predictor: Predictor, store: VolumeStore, n_classes: int) -> list[float]:
    """Dice of each foreground class of a lazy store's label against its prediction (no flips),
    predicted and counted slab by slab (validation during lazy training): one pass, as ``validation.validate``
    scores the volumes held in memory, whatever ``infer.tta`` says."""
    infer = dataclasses.replace(predictor.cfg.infer, tta=False)

    def read(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(store.image[:, :, start:stop], dtype=np.float32))[None]

    def pairs():
        for slab in stream_logits(predictor.engine, read, store.shape, predictor.cfg.train.patch_size,
                                  infer, n_classes):
            pred = slab.logits.argmax(dim=0).to(torch.uint8).cpu().numpy()  # a copy: the slab is a buffer view
            yield slab.start, pred, np.asarray(store.label[:, :, slab.start : slab.start + pred.shape[-1]])

    tallies = tally_slabs(pairs(), range(1, n_classes), MetricOptions(names=("dice",)))
    return [tallies[k].metrics((1.0, 1.0, 1.0), options=MetricOptions(names=("dice",)))["dice"]
            for k in range(1, n_classes)]
