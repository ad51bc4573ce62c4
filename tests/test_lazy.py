"""Lazy volumes: stacks converted once into chunked stores, training patches read by window."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from monai import transforms as mt
import pytest
import torch

from conftest import REPO, run_cli, smoke_args
from pipeline.config import load_config
from pipeline.data.cases import Case
from pipeline.data.io import load_image
from pipeline.data.kidney import KidneySpec, generate_kidney_stacks
from pipeline.data.monai_reader import PipelineReader
from pipeline.data.stack import SliceStack, normalised_reader, stack_statistics
from pipeline.data.store import CHUNK, lazy_cases, open_store
from pipeline.errors import UserError
from pipeline.train.lazy_crops import StoredCrops


@pytest.fixture(scope="module")
def kidney(tmp_path_factory):
    root = generate_kidney_stacks(tmp_path_factory.mktemp("k") / "stacks", KidneySpec((70, 66, 37), generations=4))
    return Case("kidney_1", root / "kidney_1" / "images", root / "kidney_1" / "labels")


def _cfg(*extra):
    return load_config(REPO / "configs" / "smoke.yaml", ["data.modality=MR", *extra])


def test_a_store_holds_the_normalised_image_the_labels_and_their_block_counts(kidney, tmp_path):
    store = open_store(kidney, _cfg(), tmp_path)
    image = normalised_reader(SliceStack(kidney.image), _cfg().data)(0, 37)[0].numpy()
    label, _ = load_image(kidney.label, label=True)
    assert store.shape == (70, 66, 37) and store.image.dtype == np.float16
    np.testing.assert_allclose(np.asarray(store.image[:]), image, rtol=1e-3, atol=1e-3)  # float16
    assert np.array_equal(np.asarray(store.label[:]), label) and label.max() == 1
    counts = np.zeros(store.foreground.shape, dtype=np.int64)
    for x, y, z in np.argwhere(label > 0):
        counts[x // CHUNK[0], y // CHUNK[1], z // CHUNK[2]] += 1
    assert np.array_equal(store.foreground, counts) and counts.sum() > 0
    assert store.block_voxels().sum() == 70 * 66 * 37
    img, lab = store.window((5, 60, 30), (10, 6, 7))
    assert img.dtype == np.float32 and np.array_equal(lab, label[5:15, 60:66, 30:37])


def test_a_store_is_reused_until_a_source_slice_or_a_setting_changes(kidney, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first = open_store(kidney, _cfg(), tmp_path).folder
    assert "first use" in caplog.text
    assert open_store(kidney, _cfg(), tmp_path).folder == first and "reusing the lazy store" in caplog.text
    assert open_store(kidney, _cfg("data.modality=CT"), tmp_path).folder != first  # other normalisation
    caplog.clear()
    slice_file = sorted(kidney.image.iterdir())[3]
    stat = slice_file.stat()
    try:
        os.utime(slice_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        rebuilt = open_store(kidney, _cfg(), tmp_path).folder
    finally:
        os.utime(slice_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rebuilt != first and "sources or settings differ from those of" in caplog.text and first.name in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]  # built beside, renamed when whole


@pytest.mark.slow
def test_crop_centres_are_drawn_uniformly_over_the_voxels_of_their_kind(tmp_path):
    """Two foreground blocks holding 1 and 63 voxels: a block-uniform draw would pick the single
    voxel half the time, a voxel-uniform one (MONAI's) 1/64 of the time."""
    images, labels = tmp_path / "c" / "images", tmp_path / "c" / "labels"
    images.mkdir(parents=True), labels.mkdir()
    from PIL import Image

    label = np.zeros((128, 64, 16), dtype=np.uint8)
    label[70, 5, 3] = 1  # alone in block (1, 0, 0)
    label[2:9, 2:11, 4] = 1  # 63 voxels in block (0, 0, 0)
    for z in range(16):
        Image.fromarray((label[..., z] * 200).astype(np.uint8)).save(images / f"{z:04d}.tif")
        Image.fromarray(label[..., z]).save(labels / f"{z:04d}.tif")
    store = open_store(Case("c", images, labels), _cfg(), tmp_path / "stores")
    crops = StoredCrops((8, 8, 4), pos_fraction=1.0, num_samples=1)
    crops.set_random_state(seed=0)
    centres = Counter(crops._centre(store, foreground=True) for _ in range(3200))
    assert all(label[c] == 1 for c in centres)
    assert 20 <= centres[(70, 5, 3)] <= 80  # about 3200 / 64 = 50
    background = [crops._centre(store, foreground=False) for _ in range(200)]
    assert all(label[c] == 0 for c in background)
    (sample,) = crops({"store": str(store.folder)})
    assert sample["image"].shape == (1, 8, 8, 4) and sample["label"].shape == (1, 8, 8, 4)


def test_lazy_is_chosen_by_size_and_refused_for_cases_that_cannot_be_read_by_slab(kidney, tiny_dataset, tmp_path):
    assert not lazy_cases(_cfg(), [kidney])  # 70 x 66 x 37 is under data.lazy_voxels
    assert lazy_cases(_cfg("data.lazy_voxels=1000"), [kidney])
    assert not lazy_cases(_cfg("data.lazy=never", "data.lazy_voxels=1000"), [kidney])
    nifti = tiny_dataset / "imagesTr" / sorted(os.listdir(tiny_dataset / "imagesTr"))[0]
    volume = Case("v", nifti, None)
    assert lazy_cases(_cfg("data.lazy_voxels=1000"), [volume])  # 48 x 48 x 24 voxels, from the header
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / "v.nrrd"))
    with pytest.raises(UserError, match="v.nrrd: only NIfTI, HDF5 and MetaImage volumes are read slab by slab; "
                                        "convert it once"):
        lazy_cases(_cfg("data.lazy=always"), [kidney, Case("m", tmp_path / "v.nrrd", None)])
    permuted = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.int16), np.array([[0, 0, 1.0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                                                       [0, 0, 0, 1]])), permuted)
    with pytest.raises(UserError, match="axes are stored in ASR order, which cannot be reoriented to RAS slab by slab"):
        lazy_cases(_cfg("data.lazy=always"), [Case("p", permuted, None)])


def test_a_store_of_a_nifti_volume_holds_it_in_the_orientation_of_the_in_memory_path(kidney, tmp_path):
    """A volume stored with y and z reversed: the store holds the RAS image MONAI's Orientationd gives the
    in-memory path (normalised as CT), its label, and the spacing of the header; a label on another
    grid is refused."""
    image, _ = load_image(kidney.image)
    label, _ = load_image(kidney.label, label=True)
    affine = np.diag([0.6, -0.6, -1.5, 1.0])
    for name, array in (("image", image.astype(np.int16) * 3 - 150), ("label", label.astype(np.uint8))):
        nib.save(nib.Nifti1Image(np.flip(array, (1, 2)), affine), tmp_path / f"{name}.nii.gz")
    case = Case("k", tmp_path / "image.nii.gz", tmp_path / "label.nii.gz")
    cfg = _cfg("data.modality=CT", "data.intensity_target=[-1.5, 2.5]")  # a planned CT run's z-scored window
    store = open_store(case, cfg, tmp_path / "stores")
    keys, files = ["image", "label"], {"image": str(case.image), "label": str(case.label)}
    loaded = mt.Compose([mt.LoadImaged(keys, reader=PipelineReader()), mt.EnsureChannelFirstd(keys),
                         mt.Orientationd(keys, axcodes="RAS", labels=None)])(files)
    low, high = cfg.data.intensity_range
    expected = (np.clip(loaded["image"][0].numpy(), low, high) - low) / (high - low) * 4.0 - 1.5
    np.testing.assert_allclose(np.asarray(store.image[:]), expected, atol=1e-3)  # float16
    assert np.array_equal(np.asarray(store.label[:]), loaded["label"][0].numpy()) and label.any()
    assert store.spacing == pytest.approx((0.6, 0.6, 1.5))
    nib.save(nib.Nifti1Image(np.flip(label.astype(np.uint8), (1, 2)), np.diag([0.6, 0.6, -1.5, 1.0])),
             tmp_path / "other.nii.gz")
    with pytest.raises(UserError, match="label geometry .affine. differs from the image's"):
        open_store(Case("o", case.image, tmp_path / "other.nii.gz"), cfg, tmp_path / "stores")


@pytest.mark.slow
def test_train_py_trains_from_lazy_stores_and_reuses_them_in_the_next_run(stack_run, tmp_path):
    root, _ = stack_run
    args = smoke_args(root, tmp_path, "train.epochs=2", "data.lazy=always")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("first use") == 3  # every case (training and validation) converted once
    stores = sorted(p.name for p in (tmp_path / "stores").iterdir())
    assert len(stores) == 3 and all((tmp_path / "stores" / s / "meta.json").is_file() for s in stores)
    _assert_logged_dice_is_the_stores_dice(tmp_path / "latest", tmp_path / "stores")  # validated slab by slab
    second = run_cli(*args)
    assert second.returncode == 0 and second.stderr.count("reusing the lazy store") == 3
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == stores
    state = torch.load(tmp_path / "latest" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2


@pytest.mark.slow
def test_train_py_trains_from_stores_of_nifti_volumes(tiny_dataset, tmp_path):
    """An MSD dataset of NIfTI volumes with data.lazy=always: every case converted once, validated slab by slab."""
    done = run_cli(*smoke_args(tiny_dataset, tmp_path, "train.epochs=1", "data.lazy=always"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("first use") == 4  # 3 training cases and 1 validation case
    metas = [json.loads(p.read_text()) for p in (tmp_path / "stores").glob("*/meta.json")]
    assert len(metas) == 4 and all(m["image"].endswith(".nii.gz") for m in metas)
    _assert_logged_dice_is_the_stores_dice(tmp_path / "latest", tmp_path / "stores")


def _assert_logged_dice_is_the_stores_dice(run: Path, stores: Path) -> None:
    """The last epoch's logged validation Dice is the mean Dice of ``last.pt`` on the validation cases'
    stores, recomputed here slab by slab."""
    from pipeline.data.layouts import load_dataset
    from pipeline.predict import Predictor
    from pipeline.train.store_validation import store_dice

    rows = (run / "log.csv").read_text(encoding="utf-8").splitlines()
    logged = float(rows[-1].split(",")[rows[0].split(",").index("val_dice")])
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    predictor = Predictor.from_run(run, "last")
    dataset = load_dataset(split["root"], predictor.cfg.data)
    stored = [open_store(dataset.case(i), predictor.cfg, stores) for i in split["val"]]
    scores = [np.mean(store_dice(predictor, store, max(predictor.labels) + 1)) for store in stored]
    assert split["val"] and logged == pytest.approx(float(np.mean(scores)), abs=6e-6)  # log.csv keeps 5 decimals


def test_the_check_reads_large_nifti_volumes_by_slab_with_the_same_report(tiny_dataset, monkeypatch):
    from pipeline.data import check, layouts
    from pipeline.config import DataConfig

    dataset = layouts.load_dataset(tiny_dataset)
    whole = check.check_dataset(dataset, DataConfig())
    slabs = []
    monkeypatch.setattr(check, "stack_statistics", lambda source, **kw: slabs.append(source) or
                        stack_statistics(source, **kw))
    streamed = check.check_dataset(dataset, DataConfig(lazy_voxels=1000))
    assert len(slabs) == 2 * len(whole.stats)  # every image and label (test cases have labels too), by slab
    assert streamed.stats.keys() == whole.stats.keys() and not whole.errors and not streamed.errors
    for case, stats in whole.stats.items():
        other = streamed.stats[case]
        assert (other.shape, other.intensity, other.label_counts) == (stats.shape, stats.intensity, stats.label_counts)
        assert other.spacing == pytest.approx(stats.spacing)


def test_a_disk_full_while_building_a_store_is_one_line_and_leaves_nothing(kidney, tmp_path, monkeypatch):
    import errno

    from pipeline.data import store as store_module

    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # a few slabs in
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    real = store_module._block_counts
    monkeypatch.setattr(store_module, "_block_counts", full)
    with pytest.raises(UserError, match="disk full while building the lazy store of kidney_1 .the partial store was "
                                        "removed.; free space or set data.store_dir"):
        open_store(kidney, _cfg(), tmp_path / "stores")
    assert list((tmp_path / "stores").iterdir()) == []  # no partial store left behind
    monkeypatch.setattr(store_module, "_block_counts", real)
    assert open_store(kidney, _cfg(), tmp_path / "stores").shape == (70, 66, 37)  # the next run builds it whole


@pytest.mark.slow
def test_validation_dice_of_a_store_equals_monais_whole_volume_prediction(stack_run, tmp_path):
    from monai.inferers import sliding_window_inference

    from pipeline import metrics
    from pipeline.predict import Predictor
    from pipeline.train.store_validation import store_dice

    root, run = stack_run
    predictor = Predictor.from_run(run, "last", ["infer.tta=true"])  # validation makes one pass all the same
    store = open_store(Case("kidney_2", root / "kidney_2" / "images", root / "kidney_2" / "labels"), predictor.cfg,
                       tmp_path)
    image = torch.from_numpy(np.asarray(store.image[:], dtype=np.float32))[None, None]
    infer = predictor.cfg.infer
    with torch.inference_mode():
        logits = sliding_window_inference(image, predictor.cfg.train.patch_size, 1, predictor.model,
                                          overlap=infer.overlap, mode=infer.blend)
    pred, label = logits[0].argmax(0).numpy(), np.asarray(store.label[:])
    (dice,) = store_dice(predictor, store, 2)
    assert dice == pytest.approx(metrics.dice(pred == 1, label == 1), abs=1e-9)
    assert label.any() and pred.any() and 0 < dice < 1  # a comparison of two non-trivial masks


@pytest.mark.slow
def test_validation_scores_a_store_by_its_dice(stack_run, tmp_path):
    """``validate`` (what log.csv's val_dice holds) scores a lazy store with its slab-by-slab Dice, here a
    non-trivial one (the smoke runs' own networks predict no vessel yet, so their logs cannot show it)."""
    from pipeline.predict import Predictor
    from pipeline.train.validation import validate
    from pipeline.train.store_validation import store_dice

    root, run = stack_run
    predictor = Predictor.from_run(run, "last")
    store = open_store(Case("kidney_2", root / "kidney_2" / "images", root / "kidney_2" / "labels"), predictor.cfg,
                       tmp_path)
    (dice,) = store_dice(predictor, store, 2)
    assert 0 < dice < 1 and validate(predictor, [store], 2) == pytest.approx(dice, abs=1e-12)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".h5"])
def test_volume_slabs_equal_the_in_memory_ras_volume(suffix, tmp_path):
    """Slabs of every streamed format, stored with axes reversed (HDF5 carries no orientation), equal the
    array MONAI's Orientationd gives the in-memory path, with its affine."""
    from monai.data import MetaTensor

    from pipeline.data.volume_slabs import VolumeSlabs

    array = np.random.default_rng(1).integers(-500, 500, (21, 17, 35)).astype(np.int16)
    affine = np.array([[-0.8, 0, 0, 4.0], [0, 0.7, 0, -2.0], [0, 0, -2.5, 9.0], [0, 0, 0, 1]])
    path = tmp_path / f"v{suffix}"
    if suffix == ".h5":
        import h5py
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=array).attrs["spacing"] = (0.8, 0.7, 2.5)
    elif suffix == ".mha":
        image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
        image.SetSpacing((0.8, 0.7, 2.5))
        image.SetOrigin((-4.0, 2.0, 9.0))  # LPS: the RAS origin (4, -2, 9)
        image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, -1))  # x runs R->L (as RAS -x), y P->A, z S->I
        sitk.WriteImage(image, str(path), useCompression=True)
    else:
        nib.save(nib.Nifti1Image(array, affine), path)
    loaded, loaded_affine = load_image(path)
    ras = mt.Orientation(axcodes="RAS", labels=None)(MetaTensor(torch.from_numpy(loaded[None]),
                                                                affine=torch.from_numpy(loaded_affine)))
    volume = VolumeSlabs(path)
    assert np.array_equal(np.concatenate([slab for _, slab in volume.slabs(8)], axis=-1), ras[0].numpy())
    np.testing.assert_allclose(volume.ras_affine(), ras.affine.numpy(), atol=1e-6)
    assert volume.spacing == pytest.approx((0.8, 0.7, 2.5))
    assert sum(volume.flips) == (0 if suffix == ".h5" else 2)
