"""The state of a training run, and its checkpoint form.

``TrainState`` holds what changes while training (weights, optimiser, schedule,
gradient scaler, epochs done, best validation Dice) and what a checkpoint must
carry to be used without the run folder (resolved config, class names, input
channels). ``checkpoint`` and ``restore`` are each other's inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models3d import build_from_config

from ..config import Config, config_to_dict
from ..errors import UserError
from ..runtime import channels_last
from ..checkpoint import capture_rng, restore_rng
from .optim import build_optimizer


@dataclass
class TrainState:
    model: nn.Module  # the network itself (not the DistributedDataParallel wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    meta: dict  # resolved config, class names and input channels, stored in every checkpoint
    epoch: int = 0  # epochs completed
    best: float = -math.inf  # best validation Dice so far
    seconds: float = 0.0  # wall time of the run so far, every session (the budget's clock)

    @classmethod
    def create(cls, cfg: Config, labels: dict[int, str], in_channels: int, device: torch.device,
               amp_dtype: torch.dtype | None, sync_batchnorm: bool = False) -> TrainState:
        """A fresh network (channels-last on the CPU) with its optimiser, schedule and scaler."""
        try:
            model = build_from_config(cfg.model, in_channels, max(labels) + 1, cfg.train.patch_size)
        except ValueError as err:
            raise UserError(str(err)) from None
        if sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        if device.type == "cpu":
            model = channels_last(model)
        optimizer, scheduler = build_optimizer(model, cfg)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        meta = {"config": config_to_dict(cfg), "labels": {str(k): v for k, v in labels.items()},
                "in_channels": in_channels}
        return cls(model, optimizer, scheduler, scaler, meta)

    def replan_poly(self, epochs: int) -> None:
        """A run extended to ``epochs`` (or shortened) continues on the poly decay it would have had with
        that many epochs from the start: the learning rate of the current epoch is set from the closed
        form, since PyTorch's chained PolynomialLR multiplies the last rate and would stay at its final 0."""
        scheduler = self.scheduler
        scheduler.total_iters = epochs
        done = min(scheduler.last_epoch, epochs)
        factor = (1 - done / epochs) ** scheduler.power
        for group, base in zip(self.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * factor
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]  # what get_last_lr reports

    def checkpoint(self, partial: dict | None = None, log_row: dict | None = None) -> dict:
        """Everything to resume from (``partial``: the interrupted epoch's step and losses) or to
        predict with; ``log_row`` is the epoch's ``log.csv`` row, written again if the log lost it."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "best_metric": self.best, "seconds": self.seconds, "rng": capture_rng(),
            "partial": partial, "log_row": log_row, **self.meta,
        }

    def restore(self, checkpoint: dict, epochs: int, global_rng: bool = True) -> None:
        """Load a checkpoint's state; ``epochs`` (``train.epochs``, perhaps raised for the resumed run)
        stretches a poly schedule; ``global_rng`` restores Python / NumPy / torch random states."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.PolynomialLR) and self.scheduler.total_iters != epochs:
            self.replan_poly(epochs)
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch, self.best = int(checkpoint["epoch"]), float(checkpoint["best_metric"])
        self.seconds = float(checkpoint.get("seconds", 0.0))  # absent in checkpoints before it was kept
        if global_rng:
            restore_rng(checkpoint["rng"])
