"""The budget clock on a fake clock: a planned run, fresh or killed and resumed, ends within half an epoch
of its budget, counting what happens before the first epoch, the validations and the post-processing
decision."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.train.budget_clock import HEARTBEAT_S, BudgetClock, decision_passes, recorded_seconds

BUDGET_S = 300.0  # "5m"


class Simulated:
    """A run's sessions on a fake clock: ``setup_s`` before the first epoch (plan, check, caching), a
    first epoch slower by ``warmup_s``, validations of ``validation_s`` every ``val_every`` epochs and at
    the last, then ``passes`` validations' worth of decision."""

    def __init__(self, epoch_s=10.0, warmup_s=10.0, validation_s=0.0, val_every=5, passes=0, setup_s=5.0):
        self.epoch_s, self.warmup_s, self.validation_s = epoch_s, warmup_s, validation_s
        self.val_every, self.passes, self.setup_s = val_every, passes, setup_s
        self.now, self.wall, self.checkpoint_s = 0.0, 0.0, 0.0

    def half_epoch(self) -> float:
        """How far whole epochs may end from the budget: half an epoch with its validation."""
        return (self.epoch_s + self.validation_s) / 2

    def session(self, epoch: int, total: int, stop_after: int | None = None) -> tuple[int, int]:
        """Run from ``epoch`` (done) towards ``total`` in a new process; ``stop_after`` epochs kills it half
        way into the next. Returns (epochs done, total)."""
        self.now = 0.0  # a new process's monotonic clock may start anywhere; 0 is as good as any
        clock = BudgetClock("5m", started=0.0, spent=self.checkpoint_s, decision_passes=self.passes,
                            clock=lambda: self.now)
        self.now += self.setup_s
        clock.epoch_end = self.now  # the clock is made after the setup, as in fit()
        validating = self.validation_s > 0
        for n in range(1, (stop_after or 10**6) + 1):
            if epoch >= total:
                break
            epoch += 1
            self.now += self.epoch_s + (self.warmup_s if n == 1 else 0.0)
            due = validating and (epoch % self.val_every == 0 or epoch == total)
            self.now += self.validation_s if due else 0.0
            self.checkpoint_s = clock.elapsed()  # what fit() stores in last.pt
            total = clock.after_epoch(epoch, total, self.validation_s if due else None, self.val_every, validating)
        if stop_after is not None and epoch < total:
            self.now += self.epoch_s / 2  # killed mid-epoch: that half is lost, and not in the checkpoint,
            self.checkpoint_s = max(self.checkpoint_s, clock.elapsed() - HEARTBEAT_S)  # but in elapsed.json
        else:
            self.now += self.passes * self.validation_s  # the decision after the last epoch
        self.wall += self.now
        return epoch, total


def test_a_fresh_run_ends_within_its_budget_counting_setup_validations_and_the_decision():
    """Before (c06c7e1): the clock started after the setup and kept a flat 5 % for validations and the
    decision; the same simulation with that clock ended at 321 s (7 % over)."""
    run = Simulated(validation_s=4.0, passes=9)
    epochs, total = run.session(0, 40)
    assert epochs == total
    assert abs(run.wall - BUDGET_S) <= run.half_epoch()


def test_a_run_killed_and_resumed_ends_within_its_budget():
    """Before (c06c7e1): ``--resume`` made no clock, so the run killed at epoch 2 trained its planned 40
    epochs: 503 s in the same simulation with that clock. The work the kill loses (half an epoch here) is
    counted from ``elapsed.json``, written every 5 s."""
    run = Simulated(validation_s=4.0, passes=9)
    done, total = run.session(0, 40, stop_after=2)
    assert done == 2 and total == 40  # killed before the first refit
    epochs, total = run.session(done, total)
    assert epochs == total < 40
    assert abs(run.wall - BUDGET_S) <= run.half_epoch() + HEARTBEAT_S  # the lost half epoch counts, but its last 5 s


def test_a_run_without_validation_keeps_no_reserve_for_it():
    run = Simulated()
    epochs, total = run.session(0, 10)  # planned too short: the clock stretches it
    assert total == 28 and run.wall == 295  # 5 + 20 + 27 x 10 s: 305 s is as far


def test_the_first_refit_waits_for_a_measured_epoch_after_the_first():
    clock = BudgetClock("5m", started=0.0, clock=lambda: 100.0)
    assert clock.after_epoch(1, 40, None, 5, False) == 40  # the first epoch of a session is not a pace
    assert BudgetClock(None, clock=lambda: 0.0).after_epoch(3, 40, None, 5, False) == 40  # no budget


@pytest.mark.parametrize("patch, decide, passes", [((32, 32, 16), True, 10), ((64, 64, 1), True, 6),
                                                   ((32, 32, 16), False, 0)])
def test_the_decision_costs_a_pass_without_flips_one_per_flip_and_one_for_reading(patch, decide, passes):
    cfg = load_config(None, [f"train.patch_size={list(patch)}", f"train.decide_postprocessing={decide}"])
    assert decision_passes(cfg.train) == passes


def test_a_plan_of_one_epoch_goes_on_when_the_budget_has_room():
    """Before: a plan cautious enough to give one epoch (timed on a busy machine) ended there, at a third of
    its budget; at the planned last epoch the first epoch's time (caching and all) stands in as the pace."""
    run = Simulated(validation_s=4.0, passes=9, val_every=1)
    epochs, total = run.session(0, 1)
    assert total > 1 and epochs == total
    assert abs(run.wall - BUDGET_S) <= run.half_epoch()


def test_the_run_s_seconds_are_kept_every_five_seconds_and_read_back_on_resume(tmp_path):
    now = [100.0]
    clock = BudgetClock("5m", started=90.0, spent=30.0, clock=lambda: now[0], record=tmp_path / "elapsed.json")
    assert recorded_seconds(tmp_path) == 0.0  # nothing written yet
    clock.tick()
    assert recorded_seconds(tmp_path) == 40.0  # 30 s of earlier sessions, 10 s of this one
    now[0] = 104.0
    clock.tick()
    assert recorded_seconds(tmp_path) == 40.0  # 4 s later: not yet
    now[0] = 106.0
    clock.tick()
    assert recorded_seconds(tmp_path) == 46.0
    (tmp_path / "elapsed.json").write_text("{not json")
    assert recorded_seconds(tmp_path) == 0.0  # a damaged record counts nothing rather than stopping the run
