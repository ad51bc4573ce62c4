"""Geometry round trips: a label written like a reference has its exact grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import UserError
from pipeline.data.grids import spacing_from_affine
from pipeline.data.io import case_id, read_geometry, read_volume
from pipeline.data.writers import write_label_like


def _oblique_affine():
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.7, 0.9, 2.5])  # flipped x: not RAS; anisotropic
    affine[:3, 3] = [12.5, -40.0, 7.25]
    return affine


def _sitk_grid(path):
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


@pytest.mark.parametrize("qform_code, sform_code", [(1, 1), (0, 2), (1, 0)])
def test_nifti_label_keeps_oblique_non_ras_geometry(tmp_path, qform_code, sform_code):
    affine = _oblique_affine()
    image = nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 16, 8)).astype(np.float32), affine)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    nib.save(image, tmp_path / "image.nii.gz")
    label = (np.arange(20 * 16 * 8).reshape(20, 16, 8) % 3).astype(np.int64)

    out = write_label_like(label, tmp_path / "image.nii.gz", tmp_path / "pred" / "case.nii.gz")

    written = nib.load(out)
    assert np.allclose(written.affine, nib.load(tmp_path / "image.nii.gz").affine, atol=1e-6)
    assert np.array_equal(np.asanyarray(written.dataobj), label)
    assert written.get_data_dtype() == np.uint8
    ref_grid, out_grid = _sitk_grid(tmp_path / "image.nii.gz"), _sitk_grid(out)
    assert ref_grid[0] == out_grid[0]
    for a, b in zip(ref_grid[1:], out_grid[1:]):
        assert np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_reference_geometry_is_copied(tmp_path, suffix):
    array = np.zeros((8, 12, 10), np.int16)  # (z, y, x) in SimpleITK order
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.6, 0.8, 3.0))
    image.SetOrigin((-5.0, 3.0, 100.0))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    sitk.WriteImage(image, str(tmp_path / f"ref{suffix}"))

    data, spacing = read_volume(tmp_path / f"ref{suffix}")
    assert data.shape == (10, 12, 8) and spacing == pytest.approx((0.6, 0.8, 3.0))
    label = np.ones(data.shape, np.uint8)
    out = write_label_like(label, tmp_path / f"ref{suffix}", tmp_path / "out.nii.gz")
    grid = read_geometry(out)
    assert grid.shape == (10, 12, 8)
    assert grid.spacing == pytest.approx((0.6, 0.8, 3.0))
    assert grid.origin == pytest.approx((-5.0, 3.0, 100.0))
    assert grid.direction == pytest.approx((0, 1, 0, 1, 0, 0, 0, 0, -1))


def test_write_refuses_a_label_on_another_grid(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "ref.nii.gz")
    with pytest.raises(ValueError, match="differs"):
        write_label_like(np.zeros((4, 4, 5), np.uint8), tmp_path / "ref.nii.gz", tmp_path / "out.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "ref.nii.gz"]  # no temporary file left behind


def test_unreadable_file_is_a_user_error(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(UserError, match="broken.nii.gz"):
        read_volume(tmp_path / "broken.nii.gz")
    with pytest.raises(UserError, match="file not found"):
        read_volume(tmp_path / "missing.nii.gz")


def test_case_id_strips_image_suffixes():
    assert case_id("a/case_001.nii.gz") == "case_001"
    assert case_id("x.mha") == "x"
    assert case_id("21_training.tif") == "21_training"


def test_spacing_of_an_oblique_anisotropic_affine_is_its_column_lengths():
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 1.3, 4.0]) @ np.diag([-1, 1, 1])  # a flipped axis keeps its size
    assert spacing_from_affine(affine) == pytest.approx((0.7, 1.3, 4.0), abs=1e-12)
    assert all(type(v) is float for v in spacing_from_affine(affine))
