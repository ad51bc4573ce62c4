"""Every fold of a cross-validation in one run folder sharing a budget, their summary, the pooled
post-processing decision, resume fold by fold, and the ensemble that ``test.py`` averages."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import pipeline.data.check as data_check
from conftest import run_cli, smoke_args
from pipeline.config import load_config, save_config
from pipeline.predict.engines import EnsembleEngine, TorchEngine
from pipeline.predict.predictor import Predictor
from pipeline.train.budget_clock import ELAPSED_FILE
from pipeline.train.folds import fold_config, fold_share, unspent


def test_the_ensemble_is_the_mean_of_the_folds_probabilities():
    torch.manual_seed(0)
    nets = [torch.nn.Conv3d(1, 3, 3, padding=1) for _ in range(3)]
    windows = torch.randn(2, 1, 8, 8, 4)
    got = EnsembleEngine([TorchEngine(n, None) for n in nets])(windows)
    with torch.no_grad():
        mean = sum(torch.softmax(n(windows), dim=1) for n in nets) / 3
    torch.testing.assert_close(torch.softmax(got, dim=1), mean)  # its "logits" are log-probabilities
    torch.testing.assert_close(got.exp().sum(dim=1), torch.ones(2, 8, 8, 4))
    assert not torch.allclose(got.argmax(1), nets[0](windows).argmax(1))  # not one fold's answer


def test_each_new_fold_shares_what_is_left_of_the_budget():
    # 30 min for 3 folds; 3 min went to the start-up and the plan: each fold gets 9 min, not the first 7
    assert fold_share(1800.0, 180.0, 3) == pytest.approx(540.0)
    assert fold_share(1800.0, 180.0 + 540.0 + 600.0, 1) == pytest.approx(480.0)  # the last fold: what is left
    assert fold_share(None, 100.0, 2) is None
    cfg = load_config(None, ["data.folds=3", "train.budget=30m"])
    fold = fold_config(cfg, 2, 540.4)
    assert (fold.data.fold, fold.train.budget, fold.data.folds) == (2, "540s", 3)
    assert fold_config(cfg, 0, None).train.budget is None


def test_the_time_finished_folds_kept_for_their_decision_is_held_for_the_pooled_one(tmp_path):
    # two folds of 540 s ended after 500 and 510 s: their clocks kept 40 and 30 s for a decision on their own
    # validation cases, which the pooled decision after the last fold makes for them; the last fold does not get it
    cfg = load_config(None, ["data.folds=3", "train.budget=30m"])
    for k, seconds in enumerate((500.0, 510.0)):
        fold = tmp_path / f"fold_{k}"
        fold.mkdir()
        save_config(fold_config(cfg, k, 540.0), fold / "config.yaml")
        (fold / ELAPSED_FILE).write_text(json.dumps({"seconds": seconds}), encoding="utf-8")
    held = [unspent(tmp_path / f"fold_{k}") for k in range(2)]
    assert held == [40.0, 30.0]
    assert fold_share(1800.0, 180.0 + 500.0 + 510.0, 1, sum(held)) == pytest.approx(540.0)  # not 610
    (tmp_path / "fold_2").mkdir()
    save_config(fold_config(cfg, 2, None), tmp_path / "fold_2" / "config.yaml")
    assert unspent(tmp_path / "fold_2") == 0.0  # no budget: nothing kept


@pytest.fixture(scope="module")
def folds_run(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folds")
    result = run_cli(*smoke_args(tiny_dataset, out, "data.folds=2", "train.epochs=1",
                                 "train.decide_postprocessing=true"))
    assert result.returncode == 0, result.stderr[-3000:]
    return (out / "latest").resolve()


@pytest.mark.slow
def test_two_folds_train_in_one_folder_with_a_summary_and_a_pooled_decision(folds_run):
    parent = folds_run
    assert json.loads((parent / "folds.json").read_text())["folds"] == ["fold_0", "fold_1"]
    vals = [json.loads((parent / f / "split.json").read_text())["val"] for f in ("fold_0", "fold_1")]
    assert len(vals[0]) == len(vals[1]) == 2 and not set(vals[0]) & set(vals[1])  # 4 cases, each validates once
    with open(parent / "folds.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["fold"] for r in rows] == ["fold_0", "fold_1", "mean"]
    best = [float(r["best_val_dice"]) for r in rows[:2]]
    assert float(rows[2]["best_val_dice"]) == pytest.approx(np.mean(best), abs=1e-6)
    for r, name in zip(rows, ("fold_0", "fold_1")):  # each fold's row is its own log's
        with open(parent / name / "log.csv", newline="") as f:
            logged = [float(e["val_dice"]) for e in csv.DictReader(f)]
        assert int(r["epochs"]) == 1 and float(r["best_val_dice"]) == pytest.approx(max(logged), abs=1e-9)
    decision = json.loads((parent / "postprocessing.json").read_text())
    assert sorted(decision["cases"]) == sorted(vals[0] + vals[1])  # pooled out-of-fold predictions
    assert not any((parent / f / "postprocessing.json").exists() for f in ("fold_0", "fold_1"))


@pytest.mark.slow
def test_test_py_averages_the_folds_and_says_so(folds_run, tiny_dataset, tmp_path):
    result = run_cli("test.py", "--run", str(folds_run), "--out", str(tmp_path / "test"), "--set",
                     "infer.probabilities=true")
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "test" / "report.md").read_text(encoding="utf-8")
    assert "ensemble: the mean probabilities of fold_0, fold_1 (best)" in report
    case = json.loads((folds_run / "split.json").read_text())["test"][0]
    image = tmp_path / "window.nii.gz"  # one patch of the case: one window, so no blending of windows
    nib.save(nib.load(tiny_dataset / "imagesTs" / f"{case}.nii.gz").slicer[8:40, 8:40, 4:20], image)
    ensemble = Predictor.from_folds(folds_run, [folds_run / "fold_0", folds_run / "fold_1"],
                                    overrides=["infer.tta=false"])
    alone = [Predictor.from_run(folds_run / f, overrides=["infer.tta=false"]) for f in ("fold_0", "fold_1")]
    probs = [p.predict(image, probabilities=True).probabilities for p in (ensemble, *alone)]
    np.testing.assert_allclose(probs[0], (probs[1] + probs[2]) / 2, atol=2e-6)
    assert np.abs(probs[1] - probs[2]).max() > 0.01  # the folds disagree somewhere: the mean is not either


@pytest.mark.slow
def test_a_killed_cross_validation_resumes_fold_by_fold(folds_run, tmp_path, monkeypatch):
    parent = Path(shutil.copytree(folds_run, tmp_path / folds_run.name))
    first = (parent / "fold_0" / "checkpoints" / "last.pt").read_bytes()
    shutil.rmtree(parent / "fold_1" / "checkpoints")  # killed before fold 1's first checkpoint
    (parent / "postprocessing.json").unlink()
    checks = []
    monkeypatch.setattr(data_check, "check_dataset", lambda *a, real=data_check.check_dataset: checks.append(1)
                        or real(*a))
    resumed = run_cli("train.py", "--resume", str(parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(checks) == 1  # the data is checked once, not again for fold 1 and for the pooled decision
    assert "fold_1: no checkpoint yet, starting the fold again" in resumed.stderr
    assert (parent / "fold_0" / "checkpoints" / "last.pt").read_bytes() == first  # the finished fold untouched
    assert (parent / "fold_1" / "checkpoints" / "last.pt").is_file() and (parent / "postprocessing.json").is_file()
    with open(parent / "folds.csv", newline="") as f:
        assert [r["fold"] for r in csv.DictReader(f)] == ["fold_0", "fold_1", "mean"]


@pytest.mark.slow
def test_one_network_commands_refuse_a_cross_validation_folder_in_one_line(folds_run, tmp_path):
    fold = folds_run / "fold_0" / "checkpoints" / "best.pt"
    tested = run_cli("test.py", "--run", str(folds_run), "--checkpoint", str(fold), "--out", str(tmp_path / "t"))
    assert tested.returncode == 2 and "averages 2 folds, each with its own checkpoints" in tested.stderr
    exported = run_cli("-m", "pipeline.export", "--run", str(folds_run), "--out", str(tmp_path / "m.zip"))
    assert exported.returncode == 2 and f"export one fold, e.g. --run {folds_run / 'fold_0'}" in exported.stderr
    assert "Traceback" not in tested.stderr + exported.stderr and not (tmp_path / "t").exists()
    assert not (tmp_path / "m.zip").exists()


def test_more_folds_than_cases_is_refused_before_any_folder(tiny_dataset, tmp_path):
    result = run_cli(*smoke_args(tiny_dataset, tmp_path / "out", "data.folds=5"))
    assert result.returncode == 2 and "data.folds=5 but only 4 training cases" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
