"""Data layer: every format with its geometry, layouts, splits, and the dataset check."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from pipeline.config import DataConfig
from pipeline.data.check import check_dataset, main as check_main
from pipeline.data.layouts import load_dataset
from pipeline.data.splits import split_cases
from pipeline.errors import UserError
from pipeline.data.io import load_image, natural_key
from pipeline.data.writers import write_label_like

RNG = np.random.default_rng(0)


def _roundtrip(reference, tmp_path, **options):
    """load -> label of the same shape -> write like the reference -> load: same grid."""
    array, affine = load_image(reference, **options)
    label = (RNG.random(array.shape[:3]) > 0.5).astype(np.uint8)
    out = write_label_like(label, reference, tmp_path / "out" / "pred.nii.gz", affine=affine)
    back, back_affine = load_image(out)
    assert np.array_equal(back, label)
    assert np.allclose(back_affine, affine, atol=1e-5)
    return array, affine


def test_nifti_round_trip_keeps_anisotropic_non_ras_affine(tmp_path):
    affine = np.array([[0, 0, 2.5, 10], [-0.7, 0, 0, 5], [0, 0.9, 0, -3], [0, 0, 0, 1.0]])  # axes permuted, flipped
    nib.save(nib.Nifti1Image(RNG.normal(size=(6, 7, 8)).astype(np.float32), affine), tmp_path / "a.nii.gz")
    array, loaded = _roundtrip(tmp_path / "a.nii.gz", tmp_path)
    assert array.shape == (6, 7, 8) and np.allclose(loaded, affine)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats_round_trip(tmp_path, suffix):
    image = sitk.GetImageFromArray(RNG.normal(size=(5, 6, 7)).astype(np.float32))  # (z, y, x)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / f"a{suffix}"))
    array, affine = _roundtrip(tmp_path / f"a{suffix}", tmp_path)
    assert array.shape == (7, 6, 5)
    assert np.allclose(np.diag(affine)[:3], (-0.7, -0.8, 2.5))  # LPS file -> RAS affine
    assert np.allclose(affine[:3, 3], (-1.0, -2.0, 3.0))


def test_hdf5_reads_keys_and_spacing_attribute(tmp_path):
    with h5py.File(tmp_path / "case.h5", "w") as f:
        f["image"] = RNG.normal(size=(10, 9, 8)).astype(np.float32)
        f["label"] = (RNG.random((10, 9, 8)) > 0.7).astype(np.uint8)
        f["image"].attrs["spacing"] = [0.625, 0.625, 1.25]
    array, affine = _roundtrip(tmp_path / "case.h5", tmp_path)
    assert array.shape == (10, 9, 8) and np.allclose(np.diag(affine)[:3], (0.625, 0.625, 1.25))
    label, label_affine = load_image(tmp_path / "case.h5", h5_key="label", label=True, spacing=(2, 2, 2))
    assert label.shape == (10, 9, 8) and np.allclose(np.diag(label_affine)[:3], (2, 2, 2))  # no attribute there
    with pytest.raises(UserError, match="no dataset 'seg'.*image, label"):
        load_image(tmp_path / "case.h5", h5_key="seg")


def test_slice_stack_is_read_in_natural_order_8_and_16_bit(tmp_path):
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        folder = tmp_path / f"stack{bits}"
        folder.mkdir()
        for z in (0, 1, 2, 10, 11):
            Image.fromarray(np.full((4, 5), z * 1000 if bits == 16 else z, dtype=dtype)).save(folder / f"{z}.png")
        array, affine = _roundtrip(folder, tmp_path / f"o{bits}", spacing=(0.5, 0.5, 3.0))
        assert array.shape == (4, 5, 5) and array.dtype == dtype
        assert [int(array[0, 0, i]) // (1000 if bits == 16 else 1) for i in range(5)] == [0, 1, 2, 10, 11]
        assert np.allclose(np.diag(affine)[:3], (0.5, 0.5, 3.0))
    assert sorted(["10.png", "2.png", "1.png"], key=natural_key) == ["1.png", "2.png", "10.png"]


def test_rgb_image_is_a_single_slice_volume_with_channels(tmp_path):
    rgb = RNG.integers(0, 255, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "21_training.tif")
    array, _ = _roundtrip(tmp_path / "21_training.tif", tmp_path)
    assert array.shape == (12, 10, 1, 3) and np.array_equal(array[:, :, 0], rgb)
    green, _ = load_image(tmp_path / "21_training.tif", channel=1)
    assert green.shape == (12, 10, 1) and np.array_equal(green[:, :, 0], rgb[..., 1])
    Image.fromarray(((rgb[..., 0] > 128) * 255).astype(np.uint8)).save(tmp_path / "21_manual1.gif")
    label, _ = load_image(tmp_path / "21_manual1.gif", label=True)
    assert set(np.unique(label).tolist()) == {0, 1}


def _dicom_series(folder, z_positions):
    folder.mkdir()
    for i, z in enumerate(z_positions):
        image = sitk.GetImageFromArray(np.full((1, 6, 5), i, np.int16))
        image.SetSpacing((0.5, 0.5, 1.0))
        image.SetOrigin((0.0, 0.0, float(z)))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1"), ("0020|0013", str(i + 1)),
                           ("0020|0032", f"0\\0\\{z}"), ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0008|0060", "CT")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{i:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_reads_and_refuses_a_gap(tmp_path):
    _dicom_series(tmp_path / "good", [0, 2, 4, 6])
    array, affine = _roundtrip(tmp_path / "good", tmp_path)
    assert array.shape == (5, 6, 4) and affine[2, 2] == pytest.approx(2.0)
    _dicom_series(tmp_path / "gap", [0, 2, 6, 8, 10])
    with pytest.raises(UserError, match="slice gap between slice001.dcm and slice002.dcm"):
        load_image(tmp_path / "gap")


# --- crafted bad files -----------------------------------------------------------------------

def _nifti_bytes(shape=(16, 16, 16)) -> bytes:
    """Random voxels, so that the gzip stream is as long as the data and cutting it loses data."""
    return nib.Nifti1Image(np.random.default_rng(1).normal(size=shape).astype(np.float32), np.eye(4)).to_bytes()


@pytest.mark.parametrize("name, content, message", [
    ("empty.nii.gz", b"", "file is empty"),
    ("truncated.nii.gz", gzip.compress(_nifti_bytes())[:8000], "cannot read image data"),
    ("truncated.nii", _nifti_bytes()[:8000], "truncated"),
    ("notgzip.nii.gz", b"\x1f\x8b" + bytes(range(200)), "cannot read"),
])
def test_broken_files_are_one_clear_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_image(tmp_path / name)
    assert name in str(err.value)


def _huge_header() -> bytes:
    """A NIfTI header declaring 30000^3 float32 voxels, followed by 1 kB of data."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    return header.binaryblock + b"\x00" * 4 + b"\x00" * 1000


def test_absurd_header_is_refused_before_allocating(tmp_path):
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(_huge_header()))
    start = time.perf_counter()
    with pytest.raises(UserError, match="declares"):
        load_image(tmp_path / "huge.nii.gz")
    assert time.perf_counter() - start < 1.0


def _msd(root, n=3, shape=(8, 8, 8)):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for i in range(n):
        image = RNG.normal(size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[2:5, 2:5, 2:5] = 1
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"c{i}.nii.gz")
        entries.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    meta = {"labels": {"0": "background", "1": "organ"}, "training": entries}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


@pytest.mark.parametrize("damage, severity, message", [
    (lambda r: nib.save(nib.Nifti1Image(np.full((8, 8, 8), np.nan, np.float32), np.eye(4)), r / "imagesTr/c0.nii.gz"),
     "error", "NaN or Inf"),
    (lambda r: nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), r / "imagesTr/c0.nii.gz"),
     "error", "image is constant"),
    (lambda r: nib.save(nib.Nifti1Image(np.full((8, 8, 8), 3, np.uint8), np.eye(4)), r / "labelsTr/c0.nii.gz"),
     "error", "label values [3] not in the label map"),
    (lambda r: nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), r / "labelsTr/c0.nii.gz"),
     "warning", "all background"),
    (lambda r: nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.diag([2, 1, 1, 1])),
                        r / "labelsTr/c0.nii.gz"), "error", "spacing"),
    (lambda r: nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2, 2), np.float32), np.eye(4)), r / "imagesTr/c0.nii.gz"),
     "error", "expected a 2D or 3D image"),
    (lambda r: (r / "imagesTr/c0.nii.gz").write_bytes(b""), "error", "file is empty"),
    (lambda r: (r / "imagesTr/c0.nii.gz").write_bytes(gzip.compress(_nifti_bytes())[:8000]), "error",
     "cannot read image data"),
    (lambda r: (r / "imagesTr/c0.nii.gz").write_bytes(gzip.compress(_huge_header())), "error", "header declares"),
])
def test_check_reports_each_problem_with_its_file(tmp_path, damage, severity, message):
    root = _msd(tmp_path / "ds")
    damage(root)
    report = check_dataset(load_dataset(root))
    found = [p for p in report.problems if message in p.message]
    assert found, [str(p) for p in report.problems]
    assert found[0].severity == severity and "c0.nii.gz" in found[0].file
    assert {p.file for p in report.problems} <= {str(root / "imagesTr/c0.nii.gz"), str(root / "labelsTr/c0.nii.gz")}


def test_dataset_json_paths_outside_the_root_are_refused(tmp_path):
    root = _msd(tmp_path / "ds")
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["training"][0]["image"] = "../../etc/passwd"
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(UserError, match="outside the dataset root"):
        load_dataset(root)


def test_drive_like_paired_folders_pair_by_number_with_fov(tmp_path):
    for folder in ("images", "1st_manual", "mask"):
        (tmp_path / folder).mkdir()
    for n in (21, 22, 3):
        colour = RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(colour).save(tmp_path / "images" / f"{n:02d}_training.tif")
        Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "1st_manual" / f"{n:02d}_manual1.gif")
        Image.fromarray(np.full((6, 5), 255, np.uint8)).save(tmp_path / "mask" / f"{n:02d}_training_mask.gif")
    dataset = load_dataset(tmp_path, DataConfig(labels=("background", "vessel")))
    assert dataset.layout == "paired"
    assert [(c.id, c.label.name, c.mask.name) for c in dataset.training] == [
        ("03_training", "03_manual1.gif", "03_training_mask.gif"),
        ("21_training", "21_manual1.gif", "21_training_mask.gif"),
        ("22_training", "22_manual1.gif", "22_training_mask.gif"),
    ]


def _drive_like(root: Path, shape=(6, 5)) -> Path:
    for folder in ("images", "1st_manual", "mask"):
        (root / folder).mkdir(parents=True)
    for n in (21, 22):
        Image.fromarray(RNG.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(root / "images" / f"{n}_training.tif")
        Image.fromarray(np.zeros(shape, np.uint8)).save(root / "1st_manual" / f"{n}_manual1.gif")
        Image.fromarray(np.full(shape, 255, np.uint8)).save(root / "mask" / f"{n}_training_mask.gif")
    return root


def _check_cli(root: Path, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stop:
        check_main(["--data", str(root)])
    return stop.value.code, capsys.readouterr().out


def test_field_of_view_mask_of_another_size_is_a_check_error(tmp_path, capsys):
    root = _drive_like(tmp_path / "drive")
    Image.fromarray(np.full((7, 5), 255, np.uint8)).save(root / "mask" / "22_training_mask.gif")
    code, out = _check_cli(root, capsys)
    assert code == 1
    assert f"error: {root / 'mask' / '22_training_mask.gif'}: shape (7, 5, 1) differs from image shape (6, 5, 1)" in out


def test_zero_byte_image_is_listed_by_the_check_with_exit_1(tmp_path, capsys):
    root = _drive_like(tmp_path / "drive")
    (root / "images" / "21_training.tif").write_bytes(b"")
    code, out = _check_cli(root, capsys)
    assert code == 1
    assert f"error: {root / 'images' / '21_training.tif'}: file is empty (0 bytes)" in out
    assert "cases: 2 training" in out  # the other case was still read and counted


def test_h5_folder_and_stack_layouts_are_detected(tmp_path):
    h5_root = tmp_path / "h5"
    h5_root.mkdir()
    for i in range(2):
        with h5py.File(h5_root / f"case{i}.h5", "w") as f:
            f["image"] = np.ones((4, 4, 4), np.float32)
            f["label"] = np.eye(4, dtype=np.uint8)[:, :, None].repeat(4, 2)
    dataset = load_dataset(h5_root)
    assert dataset.layout == "h5" and dataset.labels == {0: "background", 1: "label 1"}
    stack_root = tmp_path / "kidney"
    for case in ("kidney_1", "kidney_2"):
        for sub in ("images", "labels"):
            (stack_root / case / sub).mkdir(parents=True)
            for z in range(3):
                Image.fromarray(np.full((4, 4), z, np.uint8)).save(stack_root / case / sub / f"{z:04d}.tif")
    dataset = load_dataset(stack_root)
    assert dataset.layout == "stack" and [c.id for c in dataset.training] == ["kidney_1", "kidney_2"]


def test_csv_list_layout_and_traversal(tmp_path):
    root = _msd(tmp_path / "ds")
    (root / "cases.csv").write_text("image,label\nimagesTr/c0.nii.gz,labelsTr/c0.nii.gz\n"
                                    "imagesTr/c1.nii.gz,labelsTr/c1.nii.gz\n", encoding="utf-8")
    dataset = load_dataset(root, DataConfig(layout="list", list="cases.csv"))
    assert [c.id for c in dataset.training] == ["c0", "c1"]
    (root / "bad.csv").write_text("image,label\n/etc/hostname,labelsTr/c0.nii.gz\n", encoding="utf-8")
    with pytest.raises(UserError, match="outside the dataset root"):
        load_dataset(root, DataConfig(layout="list", list="bad.csv"))


def test_splits_fraction_kfold_and_explicit(tmp_path):
    root = _msd(tmp_path / "ds", n=6)
    cases = list(load_dataset(root).training)
    train, val, test = split_cases(cases, DataConfig(val_fraction=0.34), seed=1)
    assert len(val) == 2 and len(train) == 4 and not test
    assert split_cases(cases, DataConfig(val_fraction=0.34), seed=1)[1] == val  # seeded
    folds = [split_cases(cases, DataConfig(folds=3, fold=k), seed=0)[1] for k in range(3)]
    assert sorted(c.id for f in folds for c in f) == sorted(c.id for c in cases)  # each case validates once
    train, val, test = split_cases(cases, DataConfig(val_cases=("c1",), test_cases=("c5", "c0")), seed=0)
    assert [c.id for c in val] == ["c1"] and [c.id for c in test] == ["c5", "c0"] and len(train) == 3
    with pytest.raises(UserError, match="unknown case id"):
        split_cases(cases, DataConfig(val_cases=("nope",)), seed=0)
