"""Crops per training step (``plan/batch.py``): doubled while a step's voxels stay within the target and
the time per voxel falls by 10 %, timed by a model of fixed and per-voxel costs; the planned path times
and sets them unless the user gave them."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.plan.batch import plan_crops
from pipeline.plan.planner import plan, planned_config
from test_plan import _dataset


def _step_seconds(overhead: float, per_voxel: float, patch: tuple[int, ...], calls: list):
    """A step-time model: a fixed cost per step plus a cost per voxel of its crops."""
    def seconds_at(volumes: int, per_volume: int) -> float:
        calls.append((volumes, per_volume))
        return overhead + per_voxel * volumes * per_volume * int(np.prod(patch))
    return seconds_at


def test_small_patches_get_crops_per_step_while_the_time_per_voxel_falls():
    patch = (32, 48, 32)  # 49,152 voxels: two crops hold 98,304, the target 2,007,040
    calls = []
    # 0.1 s per step whatever its size, 1.5 s per M voxels: doubling from 2 crops saves 20 %, 13 %, then 7 %
    choices, seconds = plan_crops(patch, False, 200, _step_seconds(0.1, 1.5e-6, patch, calls))
    assert calls == [(1, 2), (2, 2), (4, 2), (8, 2)]
    assert {c.key: c.value for c in choices} == {"train.batch_size": 4, "train.samples_per_volume": 2}
    assert seconds == pytest.approx(0.1 + 1.5e-6 * 8 * 49152)
    assert "8 crops of 49,152 voxels per step" in choices[0].reason and "target is 2,007,040" in choices[0].reason
    calls.clear()  # three training volumes: more crops of each
    choices, _ = plan_crops(patch, False, 3, _step_seconds(0.1, 1.5e-6, patch, calls))
    assert calls == [(1, 2), (2, 2), (3, 3), (3, 6)] and [c.value for c in choices] == [3, 3]
    calls.clear()  # a full-size patch already holds the target: one timing, one volume, two crops
    choices, _ = plan_crops((112, 112, 80), False, 200, _step_seconds(0.1, 1e-7, (112, 112, 80), calls))
    assert calls == [(1, 2)] and [c.value for c in choices] == [1, 2]
    calls.clear()  # no fixed cost: doubling saves nothing, so the step stays at two crops
    choices, _ = plan_crops(patch, False, 200, _step_seconds(0.0, 1e-7, patch, calls))
    assert calls == [(1, 2), (2, 2)] and [c.value for c in choices] == [1, 2]


def test_the_timed_plan_sets_the_crops_unless_they_are_given(tmp_path, monkeypatch):
    import pipeline.plan.planner as planner

    seen = []

    def timed(cfg, *args, **kwargs):
        seen.append((cfg.train.batch_size, cfg.train.samples_per_volume))
        return 0.2 + 1e-7 * cfg.train.batch_size * cfg.train.samples_per_volume * int(np.prod(cfg.train.patch_size))

    monkeypatch.setattr(planner, "time_steps", timed)
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0), spacings=((1.0, 1.0, 1.0),) * 8)
    _, choices = plan(load_config(None, [f"data.root={root}", "train.budget=10m"]))
    planned = {c.key: c for c in choices}
    assert [c.key for c in choices].count("train.batch_size") == 1
    assert planned["train.batch_size"].value > 1 and seen[-1] == (planned["train.batch_size"].value,
                                                                  planned["train.samples_per_volume"].value)
    assert "timed here" in planned["train.batch_size"].reason
    seen.clear()
    given = [f"data.root={root}", "train.budget=10m", "train.samples_per_volume=4"]
    _, choices = plan(load_config(None, given), given)
    assert seen == [(1, 4)]  # the user's crops, timed once
    assert [c.value for c in choices if c.key == "train.batch_size"] == [1]  # the untimed choice, not planned


def test_the_plan_turns_augmentation_on_from_the_measured_number_of_steps(tmp_path, monkeypatch):
    import pipeline.plan.planner as planner
    from pipeline.plan.choices import AUGMENT_FROM_STEPS

    monkeypatch.setattr(planner, "time_steps", lambda cfg, *args, **kwargs: 0.01)  # s per step, any crops
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0), spacings=((1.0, 1.0, 1.0),) * 8)
    for budget in ("2m", "30m"):
        keys = [f"data.root={root}", f"train.budget={budget}"]
        _, choices = plan(load_config(None, keys), keys)
        planned = {c.key: c for c in choices}
        per_epoch = -(-6 // planned["train.batch_size"].value)  # 8 cases, 2 for validation: ceil(6 / batch)
        steps = planned["train.epochs"].value * per_epoch
        on = steps >= AUGMENT_FROM_STEPS
        assert on == (budget == "30m")  # 2 min hold about 10,000 steps of 0.01 s, 30 min about 150,000
        assert planned["train.noise_prob"].value == (0.1 if on else 0.0)
        assert planned["train.affine_prob"].value == (0.2 if on else 0.0)
        assert ("train.rotate_degrees" in planned) == on and f"{steps:,} planned steps" in planned[
            "train.gamma_prob"].reason


def test_folds_share_the_budget_the_plan_times(tmp_path, monkeypatch):
    import pipeline.plan.planner as planner

    monkeypatch.setattr(planner, "time_steps", lambda cfg, *args, **kwargs: 0.05)
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0), spacings=((1.0, 1.0, 1.0),) * 8)
    epochs = {}
    for folds in (0, 4):
        keys = [f"data.root={root}", "train.budget=20m", f"data.folds={folds}", "train.samples_per_volume=2",
                "train.batch_size=1", "train.decide_postprocessing=false"]
        _, choices = plan(load_config(None, keys), keys)
        planned = {c.key: c for c in choices}
        epochs[folds] = planned["train.epochs"].value
    assert "shared by its 4 folds" in planned["train.budget"].reason
    # 8 cases: 6 train a step each per epoch without folds (2 validate), 6 with 4 folds (fold 0 validates 2)
    assert epochs[4] == pytest.approx(epochs[0] / 4, abs=1)


def test_the_plan_trains_one_model_without_deep_supervision_and_says_why(tmp_path, monkeypatch):
    import pipeline.plan.planner as planner

    monkeypatch.setattr(planner, "time_steps", lambda cfg, *args, **kwargs: 0.05)
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0), spacings=((1.0, 1.0, 1.0),) * 8)
    keys = [f"data.root={root}", "train.budget=20m"]
    planned = {c.key: c for c in plan(load_config(None, keys), keys)[1]}
    assert planned["data.folds"].value == 0 and "benchmarks/results/ensemble.md" in planned["data.folds"].reason
    assert planned["model.deep_supervision"].value is False
    assert "benchmarks/results/levers.md" in planned["model.deep_supervision"].reason
    cfg, _ = planned_config([*keys, "data.folds=4", "model.deep_supervision=true", "model.channels=[8,16,32,64]"])
    assert (cfg.data.folds, cfg.data.fold, cfg.model.deep_supervision) == (4, None, True)  # the user's keys win
