"""Post-processing of a label map, per foreground class: keep its largest connected component, fill the
background it encloses. ``infer.largest_component`` and ``infer.fill_holes`` say for which classes:
``true`` (every foreground class), ``false``, or a list of class ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage

from ..config import InferConfig
from ..errors import UserError

log = logging.getLogger(__name__)

DECISION_FILE = "postprocessing.json"  # a run's post-processing decided on its validation cases
DECIDED_KEYS = ("infer.tta", "infer.largest_component", "infer.fill_holes")


def classes_for(setting: bool | tuple[int, ...], foreground: Iterable[int]) -> list[int]:
    """The foreground class ids a post-processing setting applies to."""
    foreground = sorted(foreground)
    if isinstance(setting, bool):
        return foreground if setting else []
    return [c for c in foreground if c in setting]


def keep_largest(label: np.ndarray, classes: list[int]) -> np.ndarray:
    """``label`` (x, y, z) with each of ``classes`` reduced to its largest connected component (26-/8-connected
    as MONAI counts it); the dropped voxels become background."""
    if not classes:
        return label
    copy = torch.from_numpy(label[None].copy())  # MONAI zeroes the dropped voxels in place
    kept = KeepLargestConnectedComponent(applied_labels=classes, independent=True)(copy)
    return np.asarray(kept[0], dtype=label.dtype)


def fill_holes(label: np.ndarray, classes: list[int]) -> np.ndarray:
    """``label`` (x, y, z) with the background enclosed by each of ``classes`` given to that class (other
    classes inside are kept). A single-slice volume is filled in its plane: in 3D nothing of a one-voxel
    thick slab is enclosed."""
    filled = label.copy()
    flat = [axis for axis, size in enumerate(label.shape) if size == 1]
    for c in classes:
        mask = label == c
        if len(flat) == 1:
            inside = np.expand_dims(ndimage.binary_fill_holes(np.squeeze(mask, axis=flat[0])), flat[0])
        else:
            inside = ndimage.binary_fill_holes(mask)
        filled[inside & (label == 0)] = c
    return filled


def postprocess(label: np.ndarray, infer: InferConfig, foreground: Iterable[int]) -> np.ndarray:
    """``infer``'s post-processing of a label map (x, y, z): largest component first, then hole filling."""
    foreground = list(foreground)
    label = keep_largest(label, classes_for(infer.largest_component, foreground))
    return fill_holes(label, classes_for(infer.fill_holes, foreground))


def decided_overrides(run_dir: str | Path, weights: str) -> list[str]:
    """The ``infer.*=...`` keys of a run's ``postprocessing.json`` when it was decided with the weights
    of digest ``weights`` (``checkpoint.weights_digest``); none without one, or, said in the log, for
    other weights (a resumed run's new ``best.pt``, or ``last.pt``)."""
    path = Path(run_dir) / DECISION_FILE
    if not path.is_file():
        return []
    try:
        decision = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(decision, dict):
            raise ValueError("not a JSON object")
        keys = [f"{key}={json.dumps(decision[key])}" for key in DECIDED_KEYS if key in decision]
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise UserError(f"{path}: cannot read the decided post-processing ({err}); delete the file to test "
                        "without it") from None
    if decision.get("weights") != weights:
        log.warning("%s was decided with other weights than these; not applied (the configured flips and "
                    "post-processing are); python train.py --resume %s decides again for best.pt", path, run_dir)
        return []
    return keys
