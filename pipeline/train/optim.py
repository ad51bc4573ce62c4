"""Optimiser and learning-rate schedule: SGD with Nesterov momentum, poly or step decay per epoch."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config


def build_optimizer(model: nn.Module,
                    cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum and weight decay, and a per-epoch poly or step decay."""
    t = cfg.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                nesterov=t.momentum > 0)
    if t.lr_schedule == "poly":
        scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=t.epochs, power=0.9)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step_epochs, gamma=t.lr_gamma)
    return optimizer, scheduler
