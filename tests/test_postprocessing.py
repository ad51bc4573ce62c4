"""Post-processing per class (largest component, hole filling) and its decision on validation cases:
hand-made label maps where each step helps or hurts, the decision kept in the run and applied by
``test.py`` under the user's keys, and the planner leaving a user's own choice alone."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli, smoke_args
from pipeline.checkpoint import save_checkpoint, weights_digest
from pipeline.config import load_config
from pipeline.plan.planner import planned_config
from pipeline.predict.postprocess import fill_holes, keep_largest, postprocess
from pipeline.predict.predictor import Predictor
from pipeline.train.postprocessing import choose, decide_after_training


def _box(shape=(20, 20, 10), lo=(4, 4, 2), hi=(16, 16, 8), value=1) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return label


def test_holes_are_filled_per_class_and_other_classes_inside_are_kept():
    label = _box()
    label[8:12, 8:12, 4:6] = 0  # a cavity in class 1
    label[9, 9, 4] = 2  # with a voxel of class 2 inside it
    filled = fill_holes(label, [1])
    assert (filled[8:12, 8:12, 4:6] == 1).sum() == 4 * 4 * 2 - 1 and filled[9, 9, 4] == 2
    assert np.array_equal(fill_holes(label, [2]), label)  # class 2 encloses nothing
    flat = _box((20, 20, 1), (4, 4, 0), (16, 16, 1))
    flat[8:10, 8:10, 0] = 0  # a hole in a single-slice image is filled in its plane
    assert fill_holes(flat, [1]).sum() == 12 * 12


def test_largest_component_per_class_leaves_other_classes_alone():
    label = _box()
    label[0, 0, 0] = 1  # a stray island of class 1
    label[19, 19, 9] = 2
    label[0, 19, 0] = 2  # class 2 in two equal islands: one is kept
    kept = keep_largest(label, [1])
    assert kept[0, 0, 0] == 0 and kept.sum() == label.sum() - 1
    both = postprocess(label, load_config(None, ["infer.largest_component=[1,2]"]).infer, [1, 2])
    assert (both == 2).sum() == 1 and (both == 1).sum() == 12 * 12 * 6


def test_each_step_is_kept_only_where_it_raises_the_validation_dice():
    ref = _box()
    ref[12:16, 12:16, 2:8] = 2  # class 2 in a corner of the box
    islands = ref.copy()
    islands[0, 0, 0] = 1  # a stray island of class 1: largest component helps class 1
    holed = islands.copy()
    holed[6:10, 6:10, 4:6] = 0  # a cavity in class 1: hole filling helps it
    real_gap = ref.copy()
    real_gap[19, 19, 9] = 2  # class 2 in two pieces in both the reference and the prediction
    worse = holed.copy()
    worse[4:8, 4:8, 2:4] = 0  # the flipped prediction is worse
    decision = choose(plain=[holed], flipped=[worse], refs=[ref], foreground=[1, 2])
    assert decision["infer.tta"] is False
    assert decision["infer.largest_component"] == [1] and decision["infer.fill_holes"] == [1]
    assert decision["dice"]["infer.fill_holes"] == pytest.approx(1.0)
    kept = choose(plain=[real_gap], flipped=[real_gap], refs=[real_gap], foreground=[1, 2])
    assert kept["infer.largest_component"] == [] and kept["infer.tta"] is False  # nothing helps a perfect map


@pytest.mark.slow
def test_a_planned_run_decides_on_its_validation_cases_and_test_py_applies_it(tiny_dataset, tmp_path, caplog):
    """Before (08dfd2b): with the default backend (auto: OpenVINO) the decision crashed on a predictor without
    a PyTorch network; a changed best.pt kept the old decision, and ``last`` got ``best``'s decision."""
    trained = run_cli(*smoke_args(tiny_dataset, tmp_path / "runs", "train.epochs=1", "train.decide_postprocessing=true",
                                  "infer.tta=false", "infer.backend=auto"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = (tmp_path / "runs" / "latest").resolve()
    decision = json.loads((run / "postprocessing.json").read_text())
    assert decision["cases"] == json.loads((run / "split.json").read_text())["val"] != []
    assert set(decision) >= {"infer.tta", "infer.largest_component", "infer.fill_holes", "dice"}
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert decision["weights"] == weights_digest(best["model"])
    (run / "postprocessing.json").write_text(json.dumps({**decision, "infer.tta": True, "infer.fill_holes": [1]}))
    torch_engine = ["infer.backend=torch"]
    assert Predictor.from_run(run, overrides=torch_engine).cfg.infer.tta is True  # the decision over the run's config
    assert Predictor.from_run(run, overrides=torch_engine).cfg.infer.fill_holes == (1,)
    mine = Predictor.from_run(run, overrides=["infer.tta=false", *torch_engine])
    assert mine.cfg.infer.tta is False  # the user's key over the decision

    best["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in best["model"].items()}  # a new best.pt
    save_checkpoint(best, run / "checkpoints" / "best.pt")
    assert Predictor.from_run(run, overrides=torch_engine).cfg.infer.fill_holes is False  # as configured
    assert "decided with other weights" in caplog.text
    decide_after_training(load_config(run / "config.yaml"), run)  # made again for the new best.pt
    again = json.loads((run / "postprocessing.json").read_text())
    assert again["weights"] == weights_digest(best["model"])
    (run / "postprocessing.json").write_text(json.dumps({**again, "infer.fill_holes": [1]}))
    assert Predictor.from_run(run, "best", torch_engine).cfg.infer.fill_holes == (1,)
    assert Predictor.from_run(run, "last", torch_engine).cfg.infer.fill_holes is False  # best's decision, not last's

    (run / "postprocessing.json").write_text("{not json")
    broken = run_cli("test.py", "--run", str(run))
    assert broken.returncode == 2 and "postprocessing.json: cannot read" in broken.stderr


def test_the_plan_leaves_post_processing_the_user_chose_alone(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    planned, _ = planned_config([f"data.root={root}", "train.epochs=1"])
    assert planned.train.decide_postprocessing is True
    mine, _ = planned_config([f"data.root={root}", "train.epochs=1", "infer.largest_component=true"])
    assert mine.train.decide_postprocessing is False and mine.infer.largest_component is True
