"""Fit the schedule to a time budget: time real training steps of the planned network on this machine
(CPU or GPU, whatever is present), then choose the epochs (and the poly decay with them) that fill it.

No other tool plans for the time a user has: nnU-Net's planner targets GPU memory, and on a 2-core CPU
its plan needs about 60 s per iteration.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.data import MetaTensor

from models3d import build_from_config
from ..config import Config
from ..config_rules import budget_seconds
from ..errors import UserError
from ..data.transforms import IMAGE, LABEL
from ..runtime import channels_last, resolve_precision, select_device
from ..train.loop import train_step
from ..train.losses import build_loss
from ..train.optim import build_optimizer

RESERVE = 0.15  # of the budget, kept for start-up, caching the volumes, checkpoints and the last validation
VALIDATIONS = 5  # validation passes spread over a run that has validation cases


def parse_budget(text: str | float) -> float:
    """Seconds of a budget: ``30m``, ``1.5h``, ``90s`` or a bare number of minutes."""
    seconds = budget_seconds(text)
    if seconds is None:
        raise UserError(f"train.budget: expected a time such as 30m, 1.5h or 90s, got {text!r}")
    return seconds


def time_steps(cfg: Config, in_channels: int, n_classes: int, steps: int = 4, warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of a training step of ``cfg``'s network, patch, crops and precision on random data:
    the training loop's own step (``train_step``: input layout, autocast, loss scaling)."""
    device = select_device()
    model = build_from_config(cfg.model, in_channels, n_classes, cfg.train.patch_size).to(device)
    model = channels_last(model) if device.type == "cpu" else model
    optimizer, _ = build_optimizer(model, cfg)
    loss_fn = build_loss(cfg, n_classes, model.supervised_outputs)
    amp = resolve_precision(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    crops = cfg.train.batch_size * cfg.train.samples_per_volume
    batch = {IMAGE: MetaTensor(torch.randn(crops, in_channels, *cfg.train.patch_size)),
             LABEL: MetaTensor(torch.randint(0, n_classes, (crops, 1, *cfg.train.patch_size)))}
    model.train()
    times = []
    for i in range(warmup + steps):
        start = clock()
        train_step(model, batch, loss_fn, optimizer, scaler, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(clock() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Schedule:
    epochs: int
    val_every: int
    reason: str


def fit_schedule(budget_s: float, step_s: float, steps_per_epoch: int, validation_s: float = 0.0,
                 final_s: float = 0.0) -> Schedule:
    """Epochs whose steps, ``VALIDATIONS`` validations of ``validation_s`` each and a last pass of ``final_s``
    (the post-processing decision) fill the budget less its reserve; at least one epoch."""
    usable = budget_s * (1 - RESERVE) - (VALIDATIONS * validation_s if validation_s else 0.0) - final_s
    epochs = max(1, math.floor(usable / (step_s * steps_per_epoch)))
    val_every = max(1, epochs // VALIDATIONS)
    span = f"{budget_s / 60:.0f} min" if budget_s >= 120 else f"{budget_s:.0f} s"
    reason = (f"{span} less {RESERVE:.0%} reserve"
              + (f", {VALIDATIONS} validations of {validation_s:.0f} s" if validation_s else "")
              + (f", {final_s:.0f} s to decide the post-processing" if final_s else "")
              + f", at {step_s:.2f} s per step (timed here) and {steps_per_epoch} steps per epoch")
    return Schedule(epochs, val_every, reason)
