"""Multi-modal cases stored one file per channel (nnU-Net's ``case_0000`` / ``case_0001``): one case per
set of files, channels stacked in order, every channel on channel 0's grid, and a two-channel network
trained and applied end to end."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import run_cli, smoke_args
from pipeline.config import load_config
from pipeline.data.io import load_image
from pipeline.data.check import check_dataset
from pipeline.data.layouts import load_dataset
from pipeline.data.transforms import build_transforms
from pipeline.errors import UserError
from pipeline.plan.planner import plan

SHAPE = (24, 20, 12)
AFFINE = np.diag([0.8, 0.8, 2.0, 1.0])


def _nnunet_dataset(root: Path, n: int = 3, names=("T2", "ADC")) -> Path:
    """nnU-Net v2: dataset.json without a case list, imagesTr/c{i}_000{k}.nii.gz, labelsTr/c{i}.nii.gz.
    Channel k of case i holds (k + 1) * 1000 + i inside a box, 0 outside."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros(SHAPE, np.uint8)
    label[6:18, 5:15, 3:9] = 1
    for i in range(n):
        for k in range(len(names)):
            image = (label * ((k + 1) * 1000.0 + i)).astype(np.float32)
            nib.save(nib.Nifti1Image(image, AFFINE), root / "imagesTr" / f"c{i}_{k:04d}.nii.gz")
        nib.save(nib.Nifti1Image(label, AFFINE), root / "labelsTr" / f"c{i}.nii.gz")
    meta = {"channel_names": {str(k): name for k, name in enumerate(names)}, "labels": {"background": 0, "box": 1},
            "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_channel_files_are_one_case_with_its_channels_in_order(tmp_path):
    dataset = load_dataset(_nnunet_dataset(tmp_path / "set"))
    assert [c.id for c in dataset.training] == ["c0", "c1", "c2"]
    assert dataset.modalities == ("T2", "ADC") and dataset.labels == {0: "background", 1: "box"}
    image, affine = load_image(dataset.case("c2").image)
    assert image.shape == (*SHAPE, 2)
    assert image[10, 10, 5].tolist() == [1002.0, 2002.0] and image[0, 0, 0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(affine, AFFINE)


@pytest.mark.parametrize("change, expected", [
    ({"shape": (24, 20, 11)}, r"shape \(24, 20, 11\) differs"),
    ({"affine": np.diag([0.8, 0.8, 2.5, 1.0])}, "spacing"),
    ({"affine": np.array([[0.8, 0, 0, 1.0], [0, 0.8, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])}, "origin is 1 mm"),
])
def test_a_channel_off_channel_0s_grid_is_refused_by_name(tmp_path, change, expected):
    root = _nnunet_dataset(tmp_path / "set", n=1)
    other = root / "imagesTr" / "c0_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(change.get("shape", SHAPE), np.float32), change.get("affine", AFFINE)), other)
    with pytest.raises(UserError, match=expected) as err:
        load_image(root / "imagesTr" / "c0_0000.nii.gz")
    assert str(err.value).startswith(f"{other}: not on the grid of channel 0, c0_0000.nii.gz")


def test_mixed_ct_and_mr_channels_are_each_normalised_by_their_own_modality(tmp_path):
    root = _nnunet_dataset(tmp_path / "set", names=("CT", "T1"))
    _, choices = plan(load_config(None, [f"data.root={root}"]), timing=False)
    chosen = {c.key: c.value for c in choices}
    assert chosen["data.channel_modality"] == ["CT", "generic"] and chosen["data.crop_foreground"] is False
    ct_fg = np.repeat([1000.0, 1001.0, 1002.0], 12 * 10 * 6)  # channel 0 inside the box of cases 0, 1, 2
    np.testing.assert_allclose(chosen["data.intensity_range"], np.percentile(ct_fg, [0.5, 99.5]), atol=0.01)
    np.testing.assert_allclose(chosen["data.intensity_target"],
                               (np.asarray(chosen["data.intensity_range"]) - ct_fg.mean()) / ct_fg.std(), atol=1e-4)

    keys = [f"{k}={json.dumps(chosen[k])}" for k in ("data.modality", "data.channel_modality", "data.crop_foreground",
                                                     "data.intensity_range", "data.intensity_target")]
    cfg = load_config(None, [f"data.root={root}", *keys, "train.patch_size=[8,8,4]"])
    image, _ = load_image(load_dataset(root, cfg.data).case("c1").image)  # (x, y, z, 2)
    out = build_transforms(cfg, train=False, keys=("image",))({"image": str(root / "imagesTr" / "c1_0000.nii.gz")})
    out = out["image"].numpy()
    low, high = chosen["data.intensity_range"]
    np.testing.assert_allclose(out[0], (np.clip(image[..., 0], low, high) - ct_fg.mean()) / ct_fg.std(), atol=1e-3)
    t1 = image[..., 1]
    np.testing.assert_allclose(out[1], (t1 - t1.mean()) / t1.std(), atol=1e-3)  # z-scored, not windowed

    wrong = load_config(None, [f"data.root={root}", "data.channel_modality=[CT, MR, MR]"]).data  # caught by the check
    problems = [p.message for p in check_dataset(load_dataset(root, wrong), wrong).problems]
    assert problems == ["has 2 channel(s), data.channel_modality names 3"] * 3


@pytest.mark.slow
def test_a_two_channel_network_trains_and_predicts_on_channel_files(tmp_path):
    root = _nnunet_dataset(tmp_path / "set", names=("CT", "T1"))  # each channel by its own modality
    checked = run_cli("-m", "pipeline.check", "--data", str(root))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    trained = run_cli(*smoke_args(root, tmp_path / "runs", "train.epochs=1", "data.val_fraction=0",
                                  "data.channel_modality=[CT,generic]", "data.intensity_range=[0,2000]",
                                  "data.crop_foreground=false", "train.patch_size=[16,16,8]"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_dir = (tmp_path / "runs" / "latest").resolve()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert state["in_channels"] == 2
    tested = run_cli("test.py", "--run", str(run_dir), "--data", str(root), "--out", str(tmp_path / "test"))
    assert tested.returncode == 0, tested.stderr[-2000:]
    predicted = nib.load(tmp_path / "test" / "predictions" / "c0.nii.gz")
    assert predicted.shape == SHAPE
    np.testing.assert_allclose(predicted.affine, AFFINE, atol=1e-5)
