"""Keep a run with ``train.budget`` inside its time, counting everything ``train.py`` does: the plan's
timed steps, the data check, caching and store building, the epochs with their checkpoints and
validations, and the post-processing decision after the last one, over every session of a resumed run.

The planner's epoch count comes from a few timed steps on random data. The clock refits it to what the
run measures: the mean epoch of this session after its first (which caches and warms up), the last
validation, and the decision, which costs a validation without test-time flips and one per flip. Refits
come after this session's third epoch, after each validation, at each quarter of the run and at its
planned last epoch (which a cautious plan of a few epochs may pass); the poly decay is replanned for a
new total (``TrainState.replan_poly``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, TrainConfig, save_config
from ..config_rules import budget_seconds
from ..distributed import Dist, broadcast
from .state import TrainState

log = logging.getLogger(__name__)

FIRST_REFIT = 3  # this session's epochs: its first is slower (caches, warm-up), so the measure starts after it
TOLERANCE = 0.01  # a new total within 1 % of the old one is not worth a change of schedule


def decision_passes(train: TrainConfig) -> int:
    """The post-processing decision's work after the last epoch, in validations: a pass without test-time
    flips, one per flip of the patch's axes, and one more for reading, resampling and putting back each
    case twice, which validation (on cached volumes) does not; 0 when the run decides nothing."""
    return 2 + 2 ** sum(size > 1 for size in train.patch_size) if train.decide_postprocessing else 0


class BudgetClock:
    """The run's time since ``train.py`` started, earlier sessions included (``spent``, seconds, from the
    checkpoint), and with a budget ``after_epoch(...)`` -> the total epochs that end within it."""

    def __init__(self, budget: str | float | None, started: float | None = None, spent: float = 0.0,
                 decision_passes: int = 0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.budget_s = None if budget is None else budget_seconds(budget)
        self.origin = (clock() if started is None else started) - spent  # the run's time zero on this clock
        self.decision_passes = decision_passes  # validations' worth of work after the last epoch
        self.epoch_end = self.clock()
        self.session_epochs = 0
        self.paces: list[float] = []  # seconds of this session's epochs after its first, validation excluded
        self.validation_s = 0.0  # the last validation's seconds (0 before one was measured)

    def elapsed(self) -> float:
        """Seconds this run has taken so far, every session of it."""
        return self.clock() - self.origin

    def after_epoch(self, epoch: int, total: int, validation_s: float | None, val_every: int,
                    validating: bool) -> int:
        """Record the epoch just ended (``validation_s``: its validation, None without one) and return the
        total epochs that fit the budget (``total`` when nothing is due or the change is within tolerance)."""
        now = self.clock()
        wall, self.epoch_end = now - self.epoch_end, now
        self.session_epochs += 1
        if self.session_epochs > 1:
            self.paces.append(wall - (validation_s or 0.0))
        if validation_s is not None:
            self.validation_s = validation_s
        quarters = {math.ceil(total * q / 4) for q in (1, 2, 3)}
        last = epoch >= total
        due = self.session_epochs == FIRST_REFIT or validation_s is not None or epoch in quarters or last
        if self.budget_s is None or not due or not (self.paces or last):
            return total
        # at the planned last epoch with no pace measured yet, the first epoch (caching and all) stands in
        fitted = epoch + self.epochs_left(epoch, val_every, validating, self.paces or [wall])
        if last:  # the run may go on where the plan was too cautious
            return fitted if fitted > epoch else total
        return fitted if abs(fitted - total) > TOLERANCE * total else total

    def epochs_left(self, epoch: int, val_every: int, validating: bool, paces: list[float]) -> int:
        """How many more epochs end nearest the budget (0: stop now): each at the mean of ``paces``,
        validations where ``val_every`` puts them and at the last epoch, then the decision's passes. Whole
        epochs miss the budget by up to half of one, over or under, rather than always under."""
        per_epoch = max(sum(paces) / len(paces), 1e-6)
        validation_s = self.validation_s if validating else 0.0
        left = self.budget_s - self.elapsed() - self.decision_passes * validation_s

        def cost(more: int) -> float:
            if more == 0:
                return 0.0
            scheduled = (epoch + more - 1) // val_every - epoch // val_every  # validations before the last epoch
            return more * per_epoch + (scheduled + 1) * validation_s

        more = max(0, int((left - validation_s) / (per_epoch + validation_s / val_every)))
        while more > 0 and cost(more) > left:
            more -= 1
        while cost(more + 1) <= left:
            more += 1
        return more + 1 if cost(more + 1) - left < left - cost(more) else more

    def refit(self, cfg: Config, run_dir: Path, state: TrainState, epoch: int, total: int,
              validation_s: float | None, info: Dist, validating: bool) -> int:
        """``after_epoch`` on rank 0, for every rank; the poly decay and the run's ``config.yaml`` (what
        ``--resume`` reads) follow a new total."""
        fitted = self.after_epoch(epoch, total, validation_s, cfg.train.val_every, validating)
        fitted = broadcast(fitted if info.is_main else total, info)
        if fitted == total:
            return total
        log.info("budget %s: %d epochs instead of %d, from the measured epoch time (%.0f s of %.0f s spent)",
                 cfg.train.budget, fitted, total, self.elapsed(), self.budget_s)
        if isinstance(state.scheduler, torch.optim.lr_scheduler.PolynomialLR):
            state.replan_poly(fitted)
        if info.is_main:
            save_config(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=fitted)),
                        run_dir / "config.yaml")
        return fitted
