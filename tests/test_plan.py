"""The planner: its choices on small synthetic datasets (CT and MR normalisation, anisotropic spacing,
a 2D set, two channels), the budget arithmetic with a fake clock, and which keys win over the plan."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from conftest import run_cli
from pipeline.config import load_config
from pipeline.data.transforms import build_transforms
from pipeline.errors import UserError
from pipeline.plan.budget import fit_schedule, parse_budget, time_steps
from pipeline.plan.planner import plan, planned_config


def _dataset(root: Path, modality: str, background: float, values: tuple[float, float], shape=(40, 36, 20),
             spacings=((1.0, 1.0, 1.0),) * 4, channels: int = 1) -> Path:
    """An MSD dataset of balls: ``background`` outside, uniform ``values`` inside, one spacing per case."""
    rng = np.random.default_rng(0)
    training = []
    for i, spacing in enumerate(spacings):
        grid = np.indices(shape).astype(float)
        ball = sum((g - s / 2) ** 2 for g, s in zip(grid, shape)) < (min(s for s in shape if s > 1) / 3) ** 2
        image = np.where(ball, rng.uniform(*values, shape), background).astype(np.float32)
        if channels > 1:
            image = np.stack([image * (c + 1) for c in range(channels)], axis=-1)
        for folder, array in (("imagesTr", image), ("labelsTr", ball.astype(np.uint8))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), root / folder / f"c{i}.nii.gz")
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"modality": {str(c): modality for c in range(channels)}, "labels": {"0": "background", "1": "ball"},
            "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _choices(root: Path, *keys: str) -> dict:
    _, choices = plan(load_config(None, [f"data.root={root}", *keys]), timing=False)
    return {c.key: c.value for c in choices}


def test_ct_gets_a_window_from_its_foreground_percentiles(tmp_path):
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0))
    chosen = _choices(root)
    fg = np.concatenate([nib.load(p).get_fdata()[nib.load(str(p).replace("imagesTr", "labelsTr")).get_fdata() > 0]
                         for p in sorted((root / "imagesTr").iterdir())])
    assert fg.size < 10_000  # every foreground voxel is in the sample: the percentiles are exact
    assert chosen["data.modality"] == "CT"
    np.testing.assert_allclose(chosen["data.intensity_range"], np.percentile(fg, [0.5, 99.5]), atol=0.01)
    # then z-scored with the foreground's mean and std, as nnU-Net does: the window maps onto its z-scores
    np.testing.assert_allclose(chosen["data.intensity_target"], (np.asarray(chosen["data.intensity_range"])
                                                                 - fg.mean()) / fg.std(), atol=1e-4)
    window = [f"{k}={json.dumps(chosen[k])}"
              for k in ("data.modality", "data.intensity_range", "data.intensity_target")]
    cfg = load_config(None, [f"data.root={root}", *window, "data.crop_foreground=false", "train.patch_size=[8,8,8]"])
    image = nib.load(root / "imagesTr" / "c0.nii.gz").get_fdata()
    out = build_transforms(cfg, train=False, keys=("image",))({"image": str(root / "imagesTr" / "c0.nii.gz")})
    out = out["image"][0].numpy()
    low, high = chosen["data.intensity_range"]
    inside = (image > low) & (image < high)
    assert inside.sum() > 1000 and out.shape == image.shape
    np.testing.assert_allclose(out[inside], (image[inside] - fg.mean()) / fg.std(), atol=1e-3)


def test_raw_mr_intensities_are_z_scored_not_clipped_to_a_ct_window(tmp_path):
    """The issue's case: MR stored with scanner values 0-3700 was clipped flat above 300."""
    chosen = _choices(_dataset(tmp_path / "mr", "MRI", 0.0, (1500.0, 3700.0)))
    assert chosen["data.modality"] == "MR" and "data.intensity_range" not in chosen
    assert chosen["data.crop_foreground"] is True  # a zero background to crop to
    z_scored = _choices(_dataset(tmp_path / "z", "MRI", -0.8, (0.5, 2.0)))
    assert z_scored["data.modality"] == "generic" and z_scored["data.crop_foreground"] is False


def test_anisotropic_spacing_keeps_the_coarse_axis_and_shapes_the_patch(tmp_path):
    spacings = ((0.7, 0.7, 5.0), (0.8, 0.8, 5.0), (0.75, 0.75, 4.0), (0.9, 0.9, 6.0))
    chosen = _choices(_dataset(tmp_path / "aniso", "MRI", 0.0, (100.0, 200.0), shape=(160, 160, 24), spacings=spacings))
    np.testing.assert_allclose(chosen["data.spacing"], np.median(spacings, axis=0))
    patch = chosen["train.patch_size"]
    assert patch[2] < patch[0] and patch[2] <= 24 and np.prod(patch) <= 112 * 112 * 80 * 1.1
    _, choices = plan(load_config(None, [f"data.root={tmp_path / 'aniso'}"]), timing=False)
    reason = next(c.reason for c in choices if c.key == "data.spacing")
    assert "anisotropic, so the coarse axis keeps its own median" in reason
    iso = ((0.7, 0.7, 0.8), (0.8, 0.8, 0.9), (0.75, 0.75, 0.7), (0.9, 0.9, 1.0))  # mixed, not anisotropic
    _, choices = plan(load_config(None, [f"data.root={_dataset(tmp_path / 'iso', 'MRI', 0.0, (1, 2), spacings=iso)}"]),
                      timing=False)
    assert "anisotropic" not in next(c.reason for c in choices if c.key == "data.spacing")


def test_a_single_slice_set_is_planned_in_2d(tmp_path):
    chosen = _choices(_dataset(tmp_path / "flat", "microscopy", 0.0, (50.0, 250.0), shape=(300, 280, 1)))
    assert chosen["train.patch_size"][2] == 1 and chosen["train.patch_size"][0] % 16 == 0
    assert chosen["data.val_fraction"] == 0.0  # four cases: none held out for validation


def test_two_channels_are_fingerprinted_and_timed_with_two_inputs(tmp_path):
    root = _dataset(tmp_path / "two", "MRI", 0.0, (100.0, 300.0), channels=2)
    found, choices = plan(load_config(None, [f"data.root={root}"]), timing=False)
    assert [c.channels for c in found.cases] == [2, 2, 2, 2]

def test_the_timed_step_is_the_loop_s_step_on_the_data_s_channels_and_crops(monkeypatch):
    import pipeline.plan.budget as budget

    seen = []

    def step(model, batch, *args):
        seen.append((next(model.parameters()).shape[1], tuple(batch["image"].shape), tuple(batch["label"].shape)))
        return torch.tensor(0.5)

    monkeypatch.setattr(budget, "train_step", step)
    ticks = iter(np.arange(0.0, 100.0, 0.5))
    cfg = load_config(None, ["train.patch_size=[16,16,8]", "model.channels=[4,8]", "train.batch_size=2",
                             "train.samples_per_volume=3"])
    assert time_steps(cfg, in_channels=2, n_classes=3, steps=3, warmup=2, clock=lambda: next(ticks)) == 0.5
    assert seen == [(2, (6, 2, 16, 16, 8), (6, 1, 16, 16, 8))] * 5  # two warm-up steps, then three timed


def test_the_schedule_fills_the_budget_by_a_fake_clock():
    ticks = iter(np.arange(0.0, 100.0, 0.25))  # every call 0.25 s later: each step takes 0.25 s
    cfg = load_config(None, ["train.patch_size=[16,16,8]", "model.channels=[4,8]"])
    assert time_steps(cfg, 1, 2, steps=3, warmup=1, clock=lambda: next(ticks)) == 0.25
    schedule = fit_schedule(budget_s=600, step_s=0.25, steps_per_epoch=8)
    assert schedule.epochs == int(600 * 0.85 / (0.25 * 8)) and schedule.val_every == schedule.epochs // 5
    with_validation = fit_schedule(600, 0.25, 8, validation_s=10)
    assert with_validation.epochs == int((600 * 0.85 - 5 * 10) / 2)
    assert fit_schedule(10, 5.0, 8).epochs == 1  # never less than one epoch


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("1.5h", 5400), ("90s", 90), (45, 2700), ("2 min", 120)])
def test_budgets_read_as_people_write_them(text, seconds):
    assert parse_budget(text) == seconds


def test_a_budget_that_is_not_a_time_is_one_line():
    with pytest.raises(UserError, match="train.budget: expected a time such as 30m"):
        parse_budget("soon")
    with pytest.raises(UserError, match="train.budget must be a time"):
        load_config(None, ["train.budget=-5m"])


def test_user_and_preset_keys_win_over_the_plan(tmp_path):
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0))
    cfg, text = planned_config([f"data.root={root}", "train.patch_size=[32,32,16]", "train.epochs=3"])
    assert cfg.train.patch_size == (32, 32, 16) and cfg.train.epochs == 3  # the user's keys; no timing needed
    assert cfg.data.modality == "CT" and cfg.name == "ct"  # planned keys fill the rest
    assert yaml.safe_load(text)["train"]["patch_size"] != [32, 32, 16]  # plan.yaml keeps what was planned
    preset = tmp_path / "preset.yaml"
    preset.write_text("data:\n  modality: generic\ntrain:\n  epochs: 2\n")
    cfg, _ = planned_config([f"data.root={root}", "train.epochs=4"], preset)
    assert cfg.data.modality == "generic" and cfg.train.epochs == 4  # preset over plan, --set over both


def test_the_log_shows_the_value_that_wins_beside_the_planned_one(tmp_path, caplog):
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0))
    preset = tmp_path / "preset.yaml"
    preset.write_text("data:\n  modality: generic\n")
    with caplog.at_level("INFO", logger="pipeline.plan.planner"):
        planned_config([f"data.root={root}", "train.patch_size=[32,32,16]", "train.epochs=3"], preset)
    lines = {m.split(" = ")[0].removeprefix("plan: "): m for m in caplog.messages if m.startswith("plan: ")}
    assert lines["train.patch_size"].startswith("plan: train.patch_size = [32, 32, 16]  (yours; the plan: [")
    assert lines["data.modality"] == "plan: data.modality = generic  (the preset's; the plan: CT)"


@pytest.mark.slow
def test_train_py_plans_own_data_and_keeps_the_plan_in_the_run(tmp_path):
    root = _dataset(tmp_path / "mr", "MRI", 0.0, (1500.0, 3700.0))
    trained = run_cli("train.py", "--set", f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "train.epochs=1",
                      "train.patch_size=[16,16,8]", "model.channels=[4,8]")  # no --config: the plan fills the rest
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = (tmp_path / "runs" / "latest").resolve()
    assert run.name.startswith("mr-") and (run / "plan.yaml").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["modality"] == "MR" and saved["train"]["epochs"] == 1


def test_2d_networks_run_contiguous_on_the_cpu():
    """With channels-last inputs the 2D strided residual UNet's backward corrupted the heap (glibc abort
    within a few steps of the planned DRIVE run); 3D networks keep channels-last, the faster layout."""
    import torch

    from models3d import build_model
    from pipeline.runtime import channels_last, input_layout

    flat = channels_last(build_model("resunet", 3, 2, channels=[4, 8], patch_size=(32, 32, 1)))
    deep = channels_last(build_model("resunet", 1, 2, channels=[4, 8], patch_size=(16, 16, 8)))
    assert input_layout(flat) == torch.contiguous_format and input_layout(deep) == torch.channels_last_3d
    assert all(p.is_contiguous() for p in flat.parameters())
    assert next(p for p in deep.parameters() if p.dim() == 5).is_contiguous(memory_format=torch.channels_last_3d)


def test_a_case_read_slab_by_slab_has_the_fingerprint_of_the_whole_case(tmp_path):
    from pipeline.data.layouts import load_dataset
    from pipeline.plan.fingerprint import fingerprint

    root = _dataset(tmp_path / "ct", "CT", -1000.0, (-100.0, 400.0), spacings=((0.8, 0.7, 2.5),) * 4)
    whole_cfg, slab_cfg = load_config(None, [f"data.root={root}"]), load_config(None, [f"data.root={root}",
                                                                                        "data.lazy_voxels=1"])
    whole = fingerprint(load_dataset(root, whole_cfg.data), whole_cfg.data).cases
    slabs = fingerprint(load_dataset(root, slab_cfg.data), slab_cfg.data).cases
    for a, b in zip(whole, slabs):
        assert (a.shape, a.class_voxels, a.zero_share) == (b.shape, b.class_voxels, b.zero_share)
        np.testing.assert_allclose(a.spacing, b.spacing)
        np.testing.assert_array_equal(np.sort(a.foreground, axis=0), np.sort(b.foreground, axis=0))  # every voxel
    assert whole[0].shape == (40, 36, 20) and whole[0].spacing == pytest.approx((0.8, 0.7, 2.5))


@pytest.mark.parametrize("command", ["train", "plan"])
def test_the_plan_refuses_what_the_dataset_check_refuses(tmp_path, command):
    """Before (08dfd2b): the plan fingerprinted the data before any check, so a label cut to 30 rows ended in an
    IndexError traceback (exit 1)."""
    root = _dataset(tmp_path / "ct", "CT", -1000.0, (40.0, 80.0))
    label = nib.load(root / "labelsTr" / "c2.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:30], label.affine), root / "labelsTr" / "c2.nii.gz")
    args = (["train.py", "--set", f"data.root={root}", f"output_dir={tmp_path / 'runs'}", "train.epochs=1"]
            if command == "train" else ["-m", "pipeline.plan", "--data", str(root)])
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "c2.nii.gz" in result.stderr and "shape" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_streamed_case_samples_its_foreground_uniformly_across_slabs(tmp_path):
    """Before (08dfd2b): up to 10,000 values per slab were pooled and resampled, so a slab with 9,000 foreground
    voxels weighed as much as one with 90,000 (its share of the sample was about 47 %, not 9 %)."""
    from pipeline.data.layouts import load_dataset
    from pipeline.plan.fingerprint import SAMPLE, fingerprint

    image, label = np.zeros((100, 100, 32), np.float32), np.zeros((100, 100, 32), np.uint8)
    label[:30, :30, 2:12], image[:30, :30, 2:12] = 1, 1.0  # 9,000 voxels in the first slab (slices 0-15)
    label[:, :, 20:29], image[:, :, 20:29] = 1, 2.0  # 90,000 in the second (16-31)
    for folder, array in (("imagesTr", image), ("labelsTr", label)):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / folder / "c0.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "fg"},
                                                       "training": [{"image": "./imagesTr/c0.nii.gz",
                                                                     "label": "./labelsTr/c0.nii.gz"}]}))
    cfg = load_config(None, [f"data.root={tmp_path}", "data.lazy_voxels=1"])  # read slab by slab
    (case,) = fingerprint(load_dataset(tmp_path, cfg.data), cfg.data).cases
    assert case.foreground.shape == (SAMPLE, 1)
    share = float(np.mean(case.foreground == 1.0))
    assert 0.08 < share < 0.102  # 9,000 of 99,000 voxels: 9.1 %, sd 0.3 %


def test_small_images_get_a_patch_that_holds_the_whole_median_image(tmp_path):
    """Before (da30da8): rounded down to 32 x 48 x 32, so no crop held a whole image; nnU-Net plans
    40 x 56 x 40 for images of this size."""
    chosen = _choices(_dataset(tmp_path / "small", "MRI", 0.0, (100.0, 200.0), shape=(35, 50, 35)))
    assert chosen["train.patch_size"] == [40, 56, 40]
    _, choices = plan(load_config(None, [f"data.root={tmp_path / 'small'}"]), timing=False)
    assert "rounded up for pooling: each crop holds a whole median image" in next(
        c.reason for c in choices if c.key == "train.patch_size")

