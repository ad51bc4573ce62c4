"""The real-data presets train and test as they are (skipped without ../shared/datasets)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import REPO, SHARED, run_cli
from pipeline.data.io import load_image
from pipeline.metrics import accuracy
from pipeline.evaluate.report import read_metrics_csv

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present (a user's clone)")]

# one epoch of two steps of a narrow network; test-time flips off (they multiply inference by 4-8 and are tested
# in test_levers.py and test_pipeline.py) and a quarter-window overlap (a tenth of the windows of
# small patches at 0.5); the torch engine (exporting for OpenVINO costs more than these few windows;
# test_export.py runs the engines); a few validation cases for test.py to score (the LA and DRIVE presets train
# on every case); everything else as the preset has it
QUICK = ["train.epochs=1", "train.volumes_per_epoch=2", "model.channels=[8,16,32]", "train.samples_per_volume=1",
         "infer.tta=false", "infer.overlap=0.25", "data.val_fraction=0.1", "infer.backend=torch"]


def _train_and_test(preset: str, tmp_path, *extra: str):
    result = run_cli("train.py", "--config", str(REPO / "configs" / f"{preset}.yaml"),
                     "--set", f"output_dir={tmp_path}", *QUICK, *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    run = (tmp_path / "latest").resolve()
    result = run_cli("test.py", "--run", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    return run, json.loads((run / "split.json").read_text(encoding="utf-8"))


def test_la_heart_preset_reads_hdf5(tmp_path):
    """The preset trains on its .h5 cases; test.py reads a held-out folder of .h5 files, as the challenge's
    test cases come, and writes each prediction on its image's grid."""
    cases = sorted((SHARED / "LA_heart_h5" / "train").glob("*.h5"))
    root = tmp_path / "la_train"  # four of the 14 cases: the preset's plan, check and cache read them all
    root.mkdir()
    for case in cases[:4]:
        shutil.copy(case, root / case.name)
    result = run_cli("train.py", "--config", str(REPO / "configs" / "la_heart.yaml"),
                     "--set", f"data.root={root}", f"output_dir={tmp_path}", *QUICK, "data.val_fraction=0")
    assert result.returncode == 0, result.stderr[-2000:]
    run = (tmp_path / "latest").resolve()
    source = cases[-1]  # a case the network did not train on
    held_out = tmp_path / "la_test"
    held_out.mkdir()
    shutil.copy(source, held_out / "case_a.h5")
    result = run_cli("test.py", "--run", str(run), "--data", str(held_out), "--out", str(tmp_path / "held_out"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_metrics_csv(tmp_path / "held_out" / "metrics.csv")
    assert [(r["case"], r["name"]) for r in rows] == [("case_a", "left_atrium")]
    image, _ = load_image(source)
    pred, _ = load_image(tmp_path / "held_out" / "predictions" / "case_a.nii.gz")
    assert pred.shape == image.shape
    summary = json.loads((tmp_path / "held_out" / "summary.json").read_text(encoding="utf-8"))
    metrics = summary["classes"]["1"]["metrics"]
    assert {"dice", "jaccard", "asd", "hd95", "hd"} <= set(metrics) and metrics["dice"]["n"] == 1


def test_drive_preset_evaluates_inside_the_field_of_view(tmp_path):
    run, split = _train_and_test("drive", tmp_path)
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
    assert not pred[fov == 0].any()  # nothing is predicted outside the field of view
    summary = json.loads((run / "test" / "summary.json").read_text(encoding="utf-8"))
    assert 0 <= summary["classes"]["1"]["metrics"]["auc"]["mean"] <= 1

    # the DRIVE test folder's names: images/NN_test.tif, 1st_manual/NN_manual1.gif, mask/NN_test_mask.gif
    test_root = tmp_path / "DRIVE_test"
    for sub in ("images", "1st_manual", "mask"):
        (test_root / sub).mkdir(parents=True)
    for n in (number, "21"):
        shutil.copy(root / "images" / f"{n}_training.tif", test_root / "images" / f"{n}_test.tif")
        shutil.copy(root / "1st_manual" / f"{n}_manual1.gif", test_root / "1st_manual" / f"{n}_manual1.gif")
        shutil.copy(root / "mask" / f"{n}_training_mask.gif", test_root / "mask" / f"{n}_test_mask.gif")
    result = run_cli("test.py", "--run", str(run), "--data", str(test_root), "--out", str(tmp_path / "drive_test"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["case"]: r for r in read_metrics_csv(tmp_path / "drive_test" / "metrics.csv")}
    assert sorted(rows) == sorted([f"{number}_test", "21_test"])
    test_pred, _ = load_image(tmp_path / "drive_test" / "predictions" / f"{number}_test.nii.gz")
    expected = accuracy(test_pred == 1, label == 1, mask=fov > 0)
    assert rows[f"{number}_test"]["accuracy"] == pytest.approx(expected, abs=1e-6)
    summary = json.loads((tmp_path / "drive_test" / "summary.json").read_text(encoding="utf-8"))
    metrics = summary["classes"]["1"]["metrics"]
    assert {"dice", "auc", "accuracy", "sensitivity", "specificity"} <= set(metrics) and metrics["auc"]["n"] == 2


def test_em_stack_preset_reads_the_slice_folder(tmp_path):
    run, split = _train_and_test("em_stack", tmp_path, "train.patch_size=[256,256,16]",
                                 "evaluate.metrics=[dice]")  # the membranes' surfaces: test_slab_distances.py
    assert split["test"] == ["isbi2012_em"]
    pred, affine = load_image(run / "test" / "predictions" / "isbi2012_em.nii.gz")
    assert pred.shape == (512, 512, 30)
    assert np.allclose(np.diag(affine)[:3], (4.0, 4.0, 50.0))


# the configurations the published preset figures were measured with (benchmarks/results/la_heart.md,
# drive.md), before the presets shrank to the keys that differ from the plan
MEASURED = {
    "la_heart": {"data.modality": "MR", "data.crop_foreground": False, "data.val_fraction": 0.0, "data.spacing": None,
                 "model.name": "resunet", "model.channels": (16, 32, 64, 128, 256), "train.epochs": 320,
                 "train.volumes_per_epoch": 10, "train.patch_size": (112, 112, 80), "train.samples_per_volume": 2,
                 "train.batch_size": 1, "train.pos_fraction": 0.67, "train.lr": 0.1, "train.val_every": 40,
                 "infer.overlap": 0.5, "infer.blend": "gaussian", "infer.tta": True, "infer.largest_component": True},
    "drive": {"data.modality": "generic", "data.channel": 1, "data.crop_foreground": False, "data.val_fraction": 0.0,
              "model.name": "unet", "model.channels": (16, 32, 64, 128, 256), "train.epochs": 300,
              "train.volumes_per_epoch": 16, "train.patch_size": (256, 256, 1), "train.samples_per_volume": 2,
              "train.pos_fraction": 0.5, "train.lr": 0.05, "train.val_every": 50, "infer.overlap": 0.5,
              "infer.blend": "gaussian", "infer.tta": True, "infer.largest_component": False, "infer.auc": True},
}


@pytest.mark.parametrize("preset", sorted(MEASURED))
def test_a_shrunk_preset_plus_the_plan_is_the_configuration_that_was_measured(preset):
    from pipeline.plan.planner import run_config

    path = REPO / "configs" / f"{preset}.yaml"
    cfg, plan = run_config(path, [], None, str(path), False)
    assert plan is not None  # plan: true
    resolved = {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in MEASURED[preset]}
    assert resolved == MEASURED[preset]
