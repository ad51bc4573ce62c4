"""Inputs that used to give a plausible, wrong number or a traceback, each with the test that failed before:
classes taken from the maximum value, masks stored as 0/255, fractions and NaN cast to class ids, classes
nobody drew raising the mean, mirrored labels, multi-page and colour images, overlapping splits, and
checkpoints and disks that do not hold what they should."""

from __future__ import annotations


import numpy as np
import pytest

from pipeline.data.writers import save_nifti
from pipeline.errors import UserError
from pipeline.evaluate.rows import evaluate_case, evaluate_files, summarize

AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """A reference cube and a prediction cube beside it: no voxel in common."""
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:8, 2:8, 2:6] = 1
    return np.roll(ref, 10, axis=0), ref


def test_a_0_255_prediction_against_a_0_1_reference_is_scored_as_the_mask_it_is(tmp_path):
    """Before: classes 1..255 from the maximum value, 254 of them empty on both sides with Dice 1 each:
    mean Dice 0.996 for two masks with no voxel in common."""
    pred, ref = _masks()
    save_nifti(pred * 255, AFFINE, tmp_path / "pred.nii.gz")
    save_nifti(ref, AFFINE, tmp_path / "ref.nii.gz")
    rows = evaluate_files("c", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", None)
    assert [r["class"] for r in rows] == [1] and rows[0]["dice"] == 0.0
    assert summarize(rows)["mean_dice"] == 0.0
    save_nifti(ref * 255, AFFINE, tmp_path / "same.nii.gz")  # the reference itself as a 0/255 mask
    assert evaluate_files("c", tmp_path / "same.nii.gz", tmp_path / "ref.nii.gz", None)[0]["dice"] == 1.0


def test_classes_come_from_the_values_present(tmp_path):
    pred, ref = _masks()
    save_nifti(pred * 7, AFFINE, tmp_path / "pred.nii.gz")  # class 7 where the reference has class 1
    save_nifti(ref, AFFINE, tmp_path / "ref.nii.gz")
    rows = evaluate_files("c", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", None)
    assert [(r["class"], r["dice"]) for r in rows] == [(1, 0.0), (7, 0.0)]  # not 1..7 with five empty classes
    assert summarize(rows)["mean_dice"] == 0.0


@pytest.mark.parametrize("value, message", [(0.9, "holds values that are not class ids .e.g. 0.9.; threshold"),
                                            (np.nan, "holds NaN or infinite values")])
def test_values_that_are_not_class_ids_are_refused_not_cast(tmp_path, value, message):
    """Before: a float 0.9 became class 0 and NaN an arbitrary integer, without a word."""
    pred, ref = _masks()
    bad = ref.astype(np.float32)
    bad[bad > 0] = value
    save_nifti(bad, AFFINE, tmp_path / "bad.nii.gz")
    save_nifti(ref, AFFINE, tmp_path / "ref.nii.gz")
    with pytest.raises(UserError, match=f"bad.nii.gz: {message}"):
        evaluate_files("c", tmp_path / "bad.nii.gz", tmp_path / "ref.nii.gz", None)
    with pytest.raises(UserError, match=f"bad.nii.gz: {message}"):
        evaluate_files("c", tmp_path / "ref.nii.gz", tmp_path / "bad.nii.gz", None)
    save_nifti(ref.astype(np.float32), AFFINE, tmp_path / "whole.nii.gz")  # whole numbers stored as floats are fine
    assert evaluate_files("c", tmp_path / "whole.nii.gz", tmp_path / "ref.nii.gz", None)[0]["dice"] == 1.0


def test_a_class_absent_from_both_sides_is_counted_not_averaged():
    """Two cases, three classes named by the dataset; class 3 is drawn in neither, class 2 only in case b.
    Before: each absent pair scored Dice 1 in the means (mean Dice 0.83 here instead of 0.5)."""
    pred, ref = _masks()
    a = evaluate_case("a", pred.astype(np.int64), ref.astype(np.int64), {1: "x", 2: "y", 3: "z"})
    both = ref.astype(np.int64) * 2
    b = evaluate_case("b", both, both, {1: "x", 2: "y", 3: "z"})
    assert [r["dice"] for r in a + b] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # the rows keep the empty-mask rule
    summary = summarize(a + b)
    classes = summary["classes"]
    assert [classes[k]["n_absent"] for k in "123"] == [1, 1, 2]
    assert classes["1"]["metrics"]["dice"]["mean"] == 0.0 and classes["1"]["metrics"]["dice"]["n"] == 1
    assert classes["2"]["metrics"]["dice"]["mean"] == 1.0 and classes["3"]["metrics"]["dice"]["n"] == 0
    assert summary["mean_dice"] == pytest.approx(0.5)  # classes 1 and 2; class 3 has no case to average


def test_a_label_stored_with_its_axes_flipped_is_refused_not_mirrored(tmp_path):
    """The same voxels with the label's x axis reversed in its header: right in world space, mirrored voxel
    by voxel. Before: a warning in the check (then trained mirrored) and a silent score in evaluation."""
    from pipeline.config import DataConfig
    from pipeline.data.check import check_dataset
    from pipeline.data.layouts import load_dataset

    pred, ref = _masks()
    image = np.random.default_rng(0).normal(size=ref.shape).astype(np.float32)
    flipped = np.diag([-0.8, 0.8, 2.0, 1.0])
    for name, array, affine in (("imagesTr/c.nii.gz", image, AFFINE), ("labelsTr/c.nii.gz", ref, flipped)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        save_nifti(array, affine, tmp_path / name)
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "cube"}, "modality": {"0": "CT"}, '
                                           '"training": [{"image": "./imagesTr/c.nii.gz", '
                                           '"label": "./labelsTr/c.nii.gz"}]}')
    report = check_dataset(load_dataset(tmp_path), DataConfig())
    (problem,) = report.errors
    assert problem.file == str(tmp_path / "labelsTr" / "c.nii.gz")
    assert "its axes run LAS, the image's RAS" in problem.message
    save_nifti(ref, AFFINE, tmp_path / "ref.nii.gz")
    with pytest.raises(UserError, match="its axes run LAS but .* run RAS; predictions must be on the reference grid"):
        evaluate_files("c", tmp_path / "labelsTr" / "c.nii.gz", tmp_path / "ref.nii.gz", None)


@pytest.mark.parametrize("split, kind", [({"train": ["a"], "val": ["b"], "test": ["c"]}, "held-out"),
                                         ({"train": ["a"], "val": ["b"], "test": ["b"]}, "selection"),
                                         ({"train": ["a", "b"], "val": [], "test": ["a", "b"]}, "training")])
def test_reports_say_whether_they_scored_a_test_a_selection_set_or_training_cases(tmp_path, split, kind):
    """Before: without a test split test.py scored the validation cases (which chose best.pt), or the
    training cases, and only a log line said so."""
    import json

    from pipeline.evaluate.report import render_markdown
    from pipeline.predict.run import SCORED, scored_kind

    (tmp_path / "split.json").write_text(json.dumps({"root": str(tmp_path), **split}))
    assert scored_kind(tmp_path, None, None) == kind and scored_kind(tmp_path, "other/root", None) == "given"
    assert scored_kind(tmp_path, None, None, "last") == ("held-out" if kind == "selection" else kind)  # nothing chosen
    pred, ref = _masks()
    summary = {**summarize(evaluate_case("a", pred, ref, {1: "x"})), "scored": kind, "scored_note": SCORED[kind]}
    text = render_markdown(summary, [], title="Test")
    assert text.splitlines()[2] == f"**Scored: {SCORED[kind]}.**"
    assert ("not a test" in text) == (kind != "held-out")


def test_validation_and_test_cases_cannot_overlap_or_repeat_and_explicit_test_cases_win(tiny_dataset, tmp_path):
    """Before: val_cases=[a, b] with test_cases=[b] chose best.pt on the test case; duplicates were accepted;
    with labelled test cases in dataset.json, data.test_cases was silently ignored."""
    import json

    from pipeline.config import DataConfig, load_config
    from pipeline.data.layouts import load_dataset
    from pipeline.data.splits import split_cases
    from pipeline.train.run import prepare_run

    cases = list(load_dataset(tiny_dataset).training)
    ids = [c.id for c in cases]
    with pytest.raises(UserError, match=f"data.val_cases and data.test_cases share {ids[1]}: a case that chooses"):
        split_cases(cases, DataConfig(val_cases=(ids[0], ids[1]), test_cases=(ids[1],)), 0)
    with pytest.raises(UserError, match=f"data.val_cases: case id.s. {ids[0]} listed more than once"):
        split_cases(cases, DataConfig(val_cases=(ids[0], ids[0])), 0)
    cfg = load_config(None, [f"data.root={tiny_dataset}", f"output_dir={tmp_path}", f"data.test_cases=[{ids[2]}]"])
    run, _ = prepare_run(cfg, None)  # the dataset has labelled test cases of its own
    assert json.loads((run.dir / "split.json").read_text())["test"] == [ids[2]]


def test_labels_stored_as_int16_0_255_do_not_make_a_256_class_network(tmp_path):
    """Before: no dataset.json, int16 labels 0/255: classes 0..255, and test.py's mean Dice was held up by
    254 classes empty on both sides."""
    from pipeline.config import DataConfig
    from pipeline.data.layouts import load_dataset

    pred, ref = _masks()
    for folder, array in (("images", ref.astype(np.float32)), ("labels", ref.astype(np.int16) * 255)):
        (tmp_path / folder).mkdir()
        save_nifti(array, AFFINE, tmp_path / folder / "c1.nii.gz")
    with pytest.raises(UserError, match=r"labels: label values \[0, 255\] leave 254 class id\(s\) below 255 unused "
                                        r"\(e.g. 1\), which would train a 256-class network"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, DataConfig(labels=("background", "cube"))).labels == {0: "background", 1: "cube"}


def test_a_checkpoint_without_the_keys_prediction_needs_is_one_line(tmp_path):
    """Before: a file that loads under weights_only but lacks 'labels' ended in a KeyError traceback."""
    import torch

    from pipeline.checkpoint import load_checkpoint

    torch.save({"model": {}, "config": {}}, tmp_path / "thin.pt")
    with pytest.raises(UserError, match="thin.pt: not a checkpoint of this tool .no labels, in_channels, epoch."):
        load_checkpoint(tmp_path / "thin.pt")


def test_a_disk_full_while_saving_a_checkpoint_keeps_the_last_one_and_says_how_to_go_on(tmp_path, monkeypatch):
    import errno

    import torch

    from pipeline.checkpoint import save_checkpoint

    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match=f"last.pt: disk full while saving the checkpoint .the last complete one is "
                                        f"kept.; free space and continue with train.py --resume {tmp_path}"):
        save_checkpoint({"epoch": 2}, path, keep_previous=True)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]  # no temporary file left


def test_a_run_folder_test_py_cannot_write_is_one_line(tmp_path, monkeypatch):
    """Before: a read-only run folder ended in a PermissionError traceback (tested by refusing mkdir: root
    ignores file modes)."""
    from pathlib import Path

    from pipeline.predict.outputs import new_output_dir

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match=f"{tmp_path / 'test'}: cannot write the test results there .permission "
                                        "denied.; pass --out DIR"):
        new_output_dir(tmp_path, None)


def test_train_py_leaves_no_folder_behind_for_a_bad_patch_or_a_latest_folder_in_the_way(tiny_dataset, tmp_path):
    """Before: a patch the network cannot pool failed after the run folder was made and latest moved to it;
    a real folder named latest ended in a traceback."""
    from conftest import run_cli, smoke_args

    bad = run_cli(*smoke_args(tiny_dataset, tmp_path, "train.patch_size=[30, 30, 16]"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "train.patch_size: patch_size must be divisible by" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run folder, no latest link
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep.txt").write_text("mine")
    blocked = run_cli(*smoke_args(tiny_dataset, tmp_path, "train.epochs=1"))
    assert blocked.returncode == 2 and "latest: a folder of that name is in the way" in blocked.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"] and (tmp_path / "latest" / "keep.txt").is_file()


@pytest.mark.slow
def test_a_plan_resampling_a_case_that_trains_from_a_store_is_refused_before_training(tiny_dataset, tmp_path):
    """Before (8bb4038): a case at another slice spacing trained on its native grid from a store whose meta.json
    kept 4 mm, while the plan had set data.spacing; test.py then exited 0."""
    import shutil

    import nibabel as nib

    from conftest import run_cli

    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    for folder in ("imagesTr", "labelsTr"):
        path = root / folder / "case_002.nii.gz"
        img = nib.load(path)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([1.0, 1.0, 2.0, 1.0])), path)
    result = run_cli("train.py", "--set", f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "train.epochs=1",
                     "data.lazy=always")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "case_002" in result.stderr and "lazy stores keep each case's native grid" in result.stderr
    assert not any((tmp_path / "runs").glob("*-*"))  # no run folder


@pytest.mark.parametrize("setting, message", [("data.contrast=clahe", "lazy stores do not apply it"),
                                              ("data.channel=1", "lazy stores hold the first channel")])
def test_settings_a_lazy_store_would_ignore_are_refused(tiny_dataset, setting, message):
    from pipeline.config import load_config
    from pipeline.data.layouts import load_dataset
    from pipeline.data.store import lazy_cases

    cfg = load_config(None, [f"data.root={tiny_dataset}", "data.lazy=always", setting])
    with pytest.raises(UserError, match=message):
        lazy_cases(cfg, list(load_dataset(tiny_dataset, cfg.data).training))
    assert lazy_cases(load_config(None, [f"data.root={tiny_dataset}", "data.lazy=always"]),
                      list(load_dataset(tiny_dataset, cfg.data).training)) is True  # the same cases, as read
