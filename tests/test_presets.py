"""The real-data presets train and test as they are (skipped without ../shared/datasets)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO, SHARED, run_cli
from pipeline.io import load_image
from pipeline.metrics import accuracy
from pipeline.report import read_metrics_csv

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present (a user's clone)")

QUICK = ["train.epochs=1", "model.channels=[8,16,32]", "train.samples_per_volume=1"]


def _train_and_test(preset: str, tmp_path, *extra: str):
    result = run_cli("train.py", "--config", str(REPO / "configs" / f"{preset}.yaml"),
                     "--set", f"output_dir={tmp_path}", *QUICK, *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    run = (tmp_path / "latest").resolve()
    result = run_cli("test.py", "--run", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    return run, json.loads((run / "split.json").read_text(encoding="utf-8"))


def test_la_heart_preset_reads_hdf5(tmp_path):
    run, split = _train_and_test("la_heart", tmp_path, "train.patch_size=[64,64,32]")
    rows = read_metrics_csv(run / "test" / "metrics.csv")
    assert [r["case"] for r in rows] == sorted(split["test"]) and {r["name"] for r in rows} == {"left_atrium"}
    image, _ = load_image(SHARED / "LA_heart_h5" / "train" / f"{split['test'][0]}.h5")
    pred, _ = load_image(run / "test" / "predictions" / f"{split['test'][0]}.nii.gz")
    assert pred.shape == image.shape


def test_drive_preset_evaluates_inside_the_field_of_view(tmp_path):
    run, split = _train_and_test("drive", tmp_path, "train.patch_size=[128,128,1]")
    case = split["test"][0]
    number = case.split("_")[0]
    root = SHARED / "DRIVE" / "training"
    pred, _ = load_image(run / "test" / "predictions" / f"{case}.nii.gz")
    label, _ = load_image(root / "1st_manual" / f"{number}_manual1.gif", label=True)
    fov, _ = load_image(root / "mask" / f"{number}_training_mask.gif", label=True)
    assert pred.shape == (584, 565, 1)
    row = next(r for r in read_metrics_csv(run / "test" / "metrics.csv") if r["case"] == case)
    assert row["accuracy"] == pytest.approx(accuracy(pred == 1, label == 1, mask=fov > 0), abs=1e-6)
    assert row["accuracy"] != pytest.approx(accuracy(pred == 1, label == 1), abs=1e-6)  # the FOV matters
    summary = json.loads((run / "test" / "summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["classes"]["1"]["metrics"]["auc"]["mean"] <= 1


def test_em_stack_preset_reads_the_slice_folder(tmp_path):
    run, split = _train_and_test("em_stack", tmp_path, "train.patch_size=[128,128,8]")
    assert split["test"] == ["isbi2012_em"]
    pred, affine = load_image(run / "test" / "predictions" / "isbi2012_em.nii.gz")
    assert pred.shape == (512, 512, 30)
    assert np.allclose(np.diag(affine)[:3], (4.0, 4.0, 50.0))
