"""NIfTI, HDF5 and MetaImage volumes above the streaming threshold: predicted slab by slab and written
back in their own geometry."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from pipeline.data.io import load_image
from pipeline.data.writers import save_nifti
from pipeline.evaluate.report import read_metrics_csv


def _as_nifti(root: Path, out: Path, case: str = "kidney_1") -> np.ndarray:
    """The stack case as NIfTI files under out/images, out/labels, stored with x and z reversed
    (affine diag(-0.7, 0.7, -2.0)): returns that affine."""
    affine = np.array([[-0.7, 0, 0, 5.0], [0, 0.7, 0, -3.0], [0, 0, -2.0, 10.0], [0, 0, 0, 1]])
    image, _ = load_image(root / case / "images")
    label, _ = load_image(root / case / "labels", label=True)
    for folder, array in (("images", image.astype(np.int16)), ("labels", label.astype(np.uint8))):
        (out / folder).mkdir(parents=True)
        save_nifti(np.flip(array, (0, 2)), affine, out / folder / f"{case}.nii.gz")
    return affine


@pytest.mark.slow
def test_test_py_streams_a_large_nifti_volume_into_its_own_geometry(stack_run, tmp_path):
    """A NIfTI above infer.stream_voxels is read slab by slab in RAS order (x and z flipped back),
    predicted, written as predictions/<case>.nii.gz in the file's own geometry and scored slab by
    slab: the label map, its affine and every metric equal the whole-volume path's."""
    root, run = stack_run
    affine = _as_nifti(root, tmp_path / "nifti")
    common = ("test.py", "--run", str(run), "--images", str(tmp_path / "nifti" / "images"),
              "--labels", str(tmp_path / "nifti" / "labels"))
    whole = run_cli(*common, "--out", str(tmp_path / "whole"))
    streamed = run_cli(*common, "--out", str(tmp_path / "streamed"), "--set", "infer.stream_voxels=0")
    assert whole.returncode == 0 and streamed.returncode == 0, streamed.stderr[-800:]
    assert "predicted slab by slab" in streamed.stderr and "predicted slab by slab" not in whole.stderr
    a, b = (nib.load(tmp_path / run_dir / "predictions" / "kidney_1.nii.gz") for run_dir in ("whole", "streamed"))
    assert np.array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj)) and np.asanyarray(b.dataobj).any()
    np.testing.assert_allclose(b.affine, affine, atol=1e-6)
    assert b.header.binaryblock == a.header.binaryblock
    assert not (tmp_path / "streamed" / "partial" / "kidney_1").exists()  # the slices were assembled and removed
    rows_whole, rows_streamed = (read_metrics_csv(tmp_path / d / "metrics.csv") for d in ("whole", "streamed"))
    for x, y in zip(rows_whole, rows_streamed):
        for metric in ("dice", "nsd", "jaccard", "hd95", "asd"):
            assert x[metric] == pytest.approx(y[metric], abs=1e-9), metric


@pytest.mark.parametrize("suffix", [".mha", ".h5", ".nii"])
def test_a_volume_predicted_by_slab_is_written_in_its_sources_geometry(suffix, tmp_path):
    """RAS label slices of a source stored with x and z reversed (MetaImage, NIfTI) or plain (HDF5) become
    a NIfTI whose voxels and affine equal the source's own grid: read back and oriented to RAS, the slices."""
    import SimpleITK as sitk
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    from pipeline.data.volume_slabs import VolumeSlabs
    from pipeline.predict.stack_job import slice_names, write_volume_prediction

    shape = (13, 11, 9)
    path = tmp_path / f"source{suffix}"
    if suffix == ".mha":
        image = sitk.GetImageFromArray(np.zeros(shape[::-1], np.int16))
        image.SetSpacing((0.8, 0.7, 2.5))
        image.SetOrigin((3.0, -1.0, 7.0))
        image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, -1))
        sitk.WriteImage(image, str(path))
    elif suffix == ".h5":
        import h5py
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=np.zeros(shape, np.int16)).attrs["spacing"] = (0.8, 0.7, 2.5)
    else:
        nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([-0.8, 0.7, -2.5, 1.0])), path)
    source = VolumeSlabs(path)
    ras = np.random.default_rng(2).integers(0, 3, shape).astype(np.uint8)
    (tmp_path / "slices").mkdir()
    for z, name in enumerate(slice_names(source)):
        Image.fromarray(ras[..., z]).save(tmp_path / "slices" / name)
    out = write_volume_prediction(tmp_path / "slices", source, tmp_path / "pred.nii.gz")
    written, written_affine = load_image(out, label=True)
    np.testing.assert_allclose(written_affine, load_image(path)[1], atol=1e-5)  # the source's own grid
    oriented = Orientation(axcodes="RAS", labels=None)(MetaTensor(torch.from_numpy(written[None]),
                                                                  affine=torch.from_numpy(written_affine)))
    assert np.array_equal(oriented[0].numpy(), ras)


@pytest.mark.slow
def test_test_py_refuses_a_label_whose_axes_run_otherwise(stack_run, tmp_path):
    """A label stored with x reversed relative to its image: compared voxel by voxel it would be mirrored."""
    root, run = stack_run
    _as_nifti(root, tmp_path / "nifti")
    label = tmp_path / "nifti" / "labels" / "kidney_1.nii.gz"
    image = nib.load(label)
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine @ np.diag([-1.0, 1, 1, 1])), label)
    for extra in ([], ["--set", "infer.stream_voxels=0"]):  # whole and slab by slab
        done = run_cli("test.py", "--run", str(run), "--images", str(tmp_path / "nifti" / "images"),
                       "--labels", str(tmp_path / "nifti" / "labels"), "--out", str(tmp_path / f"out{len(extra)}"),
                       *extra)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-600:]
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        assert str(label) in line and ("not on the grid of kidney_1.nii.gz" in line or "affine" in line)


def test_a_nifti_damaged_past_its_header_ends_in_one_line_when_read_by_slab(tmp_path):
    import gzip

    from pipeline.data.volume_slabs import VolumeSlabs
    from pipeline.errors import UserError

    save_nifti(np.arange(40 * 30 * 50, dtype=np.int16).reshape(40, 30, 50), np.eye(4), tmp_path / "v.nii.gz")
    data = gzip.decompress((tmp_path / "v.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2])  # half the stream
    volume = VolumeSlabs(tmp_path / "cut.nii.gz")
    with pytest.raises(UserError, match="cut.nii.gz: cannot read slices .* the file is damaged"):
        for _ in volume.slabs(8):
            pass
