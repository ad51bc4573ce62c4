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
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, TrainConfig, save_config
from ..config_rules import budget_seconds
from ..distributed import Dist, broadcast
from ..files import write_text
from .state import TrainState

log = logging.getLogger(__name__)

FIRST_REFIT = 3  # this session's epochs: its first is slower (caches, warm-up), so the measure starts after it
TOLERANCE = 0.01  # a new total within 1 % of the old one is not worth a change of schedule
ELAPSED_FILE = "elapsed.json"  # in the run folder: the run's seconds so far, kept every few seconds
HEARTBEAT_S = 5.0


def recorded_seconds(run_dir: Path) -> float:
    """The seconds a run had taken when its ``elapsed.json`` was last written (0 without one): a killed
    run's last seconds, which its last checkpoint does not hold."""
    try:
        return float(json.loads((run_dir / ELAPSED_FILE).read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def decision_passes(train: TrainConfig) -> int:
    """The post-processing decision's work after the last epoch, in validations: a pass without test-time
    flips, one per flip of the patch's axes, and one more for reading, resampling and putting back each
    case twice, which validation (on cached volumes) does not; 0 when the run decides nothing."""
    return 2 + 2 ** sum(size > 1 for size in train.patch_size) if train.decide_postprocessing else 0


class BudgetClock:
    """The run's time since ``train.py`` started, earlier sessions included (``spent``, seconds, from the
    checkpoint or ``elapsed.json``), and with a budget ``after_epoch(...)`` -> the total epochs that end
    within it."""

    def __init__(self, budget: str | float | None, started: float | None = None, spent: float = 0.0,
                 decision_passes: int = 0, clock: Callable[[], float] = time.monotonic, record: Path | None = None):
        self.clock, self.record, self.last_tick = clock, record, -math.inf
        self.budget_s = None if budget is None else budget_seconds(budget)
        self.origin = (clock() if started is None else started) - spent  # the run's time zero on this clock
        self.decision_passes = decision_passes  # validations' worth of work after the last epoch
        self.epoch_end = self.clock()
        self.session_epochs = 0
        self.paces: list[float] = []  # seconds of this session's epochs after its first, validation excluded
        self.validation_s = 0.0  # the last validation's seconds (0 before one was measured)

    @classmethod
    def of_run(cls, train: TrainConfig, run_dir: Path, started: float | None, checkpoint_seconds: float | None,
               validating: bool, info: Dist) -> BudgetClock:
        """The clock of a run in ``run_dir``; a resumed one (``checkpoint_seconds``: its checkpoint's) goes on
        from the later of that and ``elapsed.json``, which also holds what the kill lost. Rank 0 keeps the record."""
        spent = 0.0 if checkpoint_seconds is None else max(checkpoint_seconds, recorded_seconds(run_dir))
        return cls(train.budget, started, spent, decision_passes(train) if validating else 0,
                   record=run_dir / ELAPSED_FILE if info.is_main else None)

    def elapsed(self) -> float:
        """Seconds this run has taken so far, every session of it."""
        return self.clock() - self.origin

    def tick(self) -> None:
        """After a training step: every ``HEARTBEAT_S`` seconds, the run's seconds into ``record``
        (``elapsed.json``), so that the work a kill loses still counts against the budget on resume."""
        now = self.clock()
        if self.record is not None and now - self.last_tick >= HEARTBEAT_S:
            self.last_tick = now
            write_text(self.record, json.dumps({"seconds": round(self.elapsed(), 1)}) + "\n")

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
