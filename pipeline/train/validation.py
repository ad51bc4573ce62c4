"""Validation during training: mean foreground Dice of whole validation volumes, in memory or slab by
slab for lazy stores."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..data.store import VolumeStore
from ..data.transforms import IMAGE, LABEL
from ..distributed import Dist, gather, shard
from ..evaluate import metrics
from ..predict.predictor import Predictor
from .store_validation import store_dice


def validate(predictor: Predictor, items, n_classes: int, info: Dist = Dist()) -> float:
    """Mean foreground Dice over whole validation volumes (sliding window, argmax; no test-time
    flips or post-processing, so the score tracks the network alone and costs one pass).

    Under torchrun each rank scores its share of ``items`` and the mean is over all of them.
    """
    scores = []
    for item in tqdm(shard(items, info), desc="  validate", leave=False, unit="case", disable=not info.is_main):
        if isinstance(item, VolumeStore):  # too large to hold: slab by slab
            scores.append(float(np.mean(store_dice(predictor, item, n_classes))))
            continue
        pred = predictor.logits(item[IMAGE].as_tensor()[None], tta=False).argmax(dim=1)[0].cpu().numpy()
        ref = item[LABEL].as_tensor()[0].cpu().numpy()
        scores.append(float(np.mean([metrics.dice(pred == c, ref == c) for c in range(1, n_classes)])))
    return float(np.mean(gather(scores, info)))
