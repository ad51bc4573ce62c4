"""Lazy volumes: stacks converted once into chunked stores, training patches read by window."""

from __future__ import annotations

import logging
import os
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli, smoke_args
from pipeline.config import load_config
from pipeline.data.cases import Case
from pipeline.data.io import load_image
from pipeline.data.kidney import KidneySpec, generate_kidney_stacks
from pipeline.data.stack import SliceStack, normalised_reader
from pipeline.data.store import CHUNK, VolumeStore, lazy_cases, open_store
from pipeline.errors import UserError
from pipeline.train.lazy_crops import StoredCrops


@pytest.fixture(scope="module")
def kidney(tmp_path_factory):
    root = generate_kidney_stacks(tmp_path_factory.mktemp("k") / "stacks", KidneySpec(shape=(70, 66, 37), generations=4))
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


def test_lazy_is_chosen_by_size_and_refused_for_cases_that_are_not_stacks(kidney, tiny_dataset):
    assert not lazy_cases(_cfg(), [kidney])  # 70 x 66 x 37 is under data.lazy_voxels
    assert lazy_cases(_cfg("data.lazy_voxels=1000"), [kidney])
    assert not lazy_cases(_cfg("data.lazy=never", "data.lazy_voxels=1000"), [kidney])
    volume = Case("v", tiny_dataset / "imagesTr" / sorted(os.listdir(tiny_dataset / "imagesTr"))[0], None)
    with pytest.raises(UserError, match="v: lazy volumes are built from slice stacks"):
        lazy_cases(_cfg("data.lazy=always"), [kidney, volume])


def test_train_py_trains_from_lazy_stores_and_reuses_them_in_the_next_run(stack_run, tmp_path):
    root, _ = stack_run
    args = smoke_args(root, tmp_path, "train.epochs=2", "data.lazy=always")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stderr.count("first use") == 3  # every case (training and validation) converted once
    stores = sorted(p.name for p in (tmp_path / "stores").iterdir())
    assert len(stores) == 3 and all((tmp_path / "stores" / s / "meta.json").is_file() for s in stores)
    rows = (tmp_path / "latest" / "log.csv").read_text(encoding="utf-8").splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert 0.0 <= float(last[header.index("val_dice")]) <= 1.0  # validated slab by slab on its store
    second = run_cli(*args)
    assert second.returncode == 0 and second.stderr.count("reusing the lazy store") == 3
    assert sorted(p.name for p in (tmp_path / "stores").iterdir()) == stores
    state = torch.load(tmp_path / "latest" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
