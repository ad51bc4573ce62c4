"""Keep a run with ``train.budget`` inside its time: the planner's epoch count comes from a few timed
steps on random data; real epochs also read and augment crops, write checkpoints and validate. After
the first epochs, and again a quarter of the way in, the epoch count is fitted to the measured epoch
time, and the poly decay is replanned for the new total (``TrainState.replan_poly``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, save_config
from ..config_rules import budget_seconds
from ..distributed import Dist, broadcast
from .state import TrainState

log = logging.getLogger(__name__)

FIRST_REFIT = 3  # epochs: the first is slower (caches, warm-up), so the measure starts after it
END_RESERVE = 0.05  # of the budget, left for the last checkpoint and the final validation
TOLERANCE = 0.02  # a new total within 2 % of the old one is not worth a change of schedule


class BudgetClock:
    """``after_epoch(epoch, total)`` -> the total epochs that end near ``budget`` after this clock started."""

    def __init__(self, budget: str | float, clock: Callable[[], float] = time.monotonic):
        self.clock, self.start = clock, clock()
        self.end = self.start + budget_seconds(budget) * (1 - END_RESERVE)
        self.first_epoch_end: float | None = None
        self.refits: set[int] = set()

    def after_epoch(self, epoch: int, total: int) -> int:
        now = self.clock()
        if epoch == 1:
            self.first_epoch_end = now
        due = epoch == FIRST_REFIT or epoch == max(FIRST_REFIT + 1, math.ceil(total / 4))
        if not due or epoch in self.refits or self.first_epoch_end is None or epoch >= total:
            return total
        self.refits.add(epoch)
        per_epoch = (now - self.first_epoch_end) / (epoch - 1)
        fitted = epoch + max(1, math.floor((self.end - now) / per_epoch))
        return fitted if abs(fitted - total) > TOLERANCE * total else total

    def refit(self, cfg: Config, run_dir: Path, state: TrainState, epoch: int, total: int, info: Dist) -> int:
        """``after_epoch`` on rank 0, for every rank; the poly decay and the run's ``config.yaml`` (what
        ``--resume`` reads) follow a new total."""
        fitted = broadcast(self.after_epoch(epoch, total) if info.is_main else total, info)
        if fitted == total:
            return total
        log.info("budget %s: %d epochs instead of %d, from the measured epoch time", cfg.train.budget, fitted, total)
        if isinstance(state.scheduler, torch.optim.lr_scheduler.PolynomialLR):
            state.replan_poly(fitted)
        if info.is_main:
            save_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=fitted)),
                        run_dir / "config.yaml")
        return fitted
