"""clDice, the centreline Dice of Shit et al. (CVPR 2021), for tubular structures (vessels, airways, neurites).

    Tprec = |S(P) ∩ R| / |S(P)|   (how much of the predicted centreline lies in the reference)
    Tsens = |S(R) ∩ P| / |S(R)|   (how much of the reference centreline the prediction covers)
    clDice = 2 Tprec Tsens / (Tprec + Tsens)

with S the skeleton from ``skimage.morphology.skeletonize`` (Zhang's thinning in
2D, Lee's in 3D). A missed or spurious thin branch moves clDice much more than
Dice, which is dominated by the thick vessels.

Empty masks: both empty gives 1 (as Dice does); no skeleton on exactly one side
gives 0. Axes of length 1 are dropped first, so a single-slice volume is
thinned as the 2D image it is.
"""

from __future__ import annotations

import numpy as np
from skimage.morphology import skeletonize

from .metrics import bounding_box, binary_pair


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The centreline of a boolean 2D or 3D ``mask`` (same shape), thinned inside its bounding box
    plus one voxel of background (thinning is local, so the crop does not change it)."""
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    box = bounding_box(mask)
    out[box] = skeletonize(mask[box])
    return out


def cldice(pred, ref, mask=None) -> float:
    """Centreline Dice of boolean masks ``pred`` and ``ref`` (2D or 3D), inside ``mask`` when given."""
    p, r = binary_pair(pred, ref, mask)
    p, r = np.squeeze(p), np.squeeze(r)
    if p.ndim not in (2, 3):
        raise ValueError(f"clDice needs 2D or 3D masks, got shape {pred.shape}")
    p_skeleton, r_skeleton = skeleton(p), skeleton(r)
    n_p, n_r = int(np.count_nonzero(p_skeleton)), int(np.count_nonzero(r_skeleton))
    if n_p == 0 or n_r == 0:
        return 1.0 if n_p == n_r else 0.0
    t_prec = np.count_nonzero(p_skeleton & r) / n_p
    t_sens = np.count_nonzero(r_skeleton & p) / n_r
    return 0.0 if t_prec + t_sens == 0 else float(2 * t_prec * t_sens / (t_prec + t_sens))
