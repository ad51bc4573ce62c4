"""The training loss: weighted Dice + cross-entropy on softmax logits (MONAI ``DiceCELoss``), per output
of a deeply supervised network (MONAI ``DeepSupervisionLoss``)."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn

from ..config import Config
from ..errors import UserError


def build_loss(cfg: Config, n_classes: int, outputs: int = 1) -> nn.Module:
    """``train.dice_weight`` x Dice loss + ``train.ce_weight`` x cross-entropy, on logits (B, K, H, W, D)
    and labels (B, 1, H, W, D).

    The Dice term is 1 - Dice per crop and class (``train.batch_dice``: one Dice per class over
    the step's crops), averaged over crops and classes (``train.dice_background=false``: foreground
    classes only). ``train.class_weights`` w (one per class, background first) weight **both** terms:
    the cross-entropy becomes the w-weighted mean sum_i w_{y_i} (-log p_i,y_i) / sum_i w_{y_i} over
    voxels i (PyTorch's weighted ``CrossEntropyLoss``), and the Dice term the mean over crops and
    classes of w_c (1 - Dice_c), except when it covers a single class (two classes without the
    background), where MONAI leaves it unweighted. Tested against a hand computation in
    ``tests/test_train.py``. ``outputs`` > 1: the logits of a deeply supervised network, a list with the
    full resolution first (``DeepSupervisionLoss``).
    """
    t = cfg.train
    weights = t.class_weights
    if weights is not None and len(weights) != n_classes:
        raise UserError(f"train.class_weights: expected {n_classes} weights (background first), got {len(weights)}")
    loss = DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=t.dice_weight, lambda_ce=t.ce_weight,
        include_background=t.dice_background, batch=t.batch_dice,
        weight=torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
    )
    # one loss per output of a deeply supervised network, its label downsampled (nearest), weights halving
    # per level and summing to 1 (nnU-Net's); a single output is the loss itself (in float32)
    halving = [0.5**level for level in range(outputs)]
    return LabelDownsamplingLoss(loss, weights=[w / sum(halving) for w in halving])


class LabelDownsamplingLoss(DeepSupervisionLoss):
    """MONAI's ``DeepSupervisionLoss`` for labels of any dtype: torch's nearest interpolation, which it
    downsamples them with, takes no integer tensors, so the label goes in as float32 (class indices are
    exact in it)."""

    def get_loss(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().get_loss(input, target.float())
