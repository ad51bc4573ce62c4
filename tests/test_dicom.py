"""DICOM in (a study folder split by series, one picked by modality, description or UID; HU and geometry
kept) and clinical outputs (DICOM SEG via highdicom, Slicer .seg.nrrd via slicerio), read back and
compared voxel for voxel in world coordinates."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import slicerio

from conftest import run_cli
from pipeline.data.check import check_dataset, format_report
from pipeline.data.dicom_series import RAS_TO_LPS, SeriesInfo, write_dicom_series
from pipeline.data.formats import dicom_series
from pipeline.data.io import load_image
from pipeline.data.layouts import load_dataset
from pipeline.data.segmentation_files import Algorithm, write_dicom_seg, write_seg_nrrd
from pipeline.data.synthetic import PhantomSpec, make_phantom
from pipeline.errors import UserError
from pipeline.config import DataConfig, load_config

LABELS = {0: "background", 1: "organ", 2: "vessel"}
COLOURS = {"organ": (230, 25, 75), "vessel": (60, 180, 75)}  # label_maps.CLASS_COLOURS 1 and 2


@pytest.fixture(scope="module")
def phantom():
    """(HU volume, label, affine) of one demo phantom of 48 x 40 x 24 voxels (0.8 x 0.8 x 2 mm, x and y flipped)."""
    image, label, affine = make_phantom(PhantomSpec(shape=(48, 40, 24), n_train=1, n_test=0, seed=3), 0)
    return np.round(image).clip(-1024, None), label.astype(np.uint8), affine


def _study(folder: Path, phantom) -> Path:
    """A CT series (description "arterial phase") and an MR-like series of the same grid in one folder."""
    hu, _, affine = phantom
    write_dicom_series(hu, affine, folder, SeriesInfo("CT", "arterial phase", series_uid="1.2.3.4.1"))
    write_dicom_series(hu + 2000, affine, folder / "mr", SeriesInfo("MR", "T1", series_uid="1.2.3.4.2"))
    for path in (folder / "mr").iterdir():
        path.rename(folder / f"mr_{path.name}")
    (folder / "mr").rmdir()
    return folder


def test_a_generated_ct_series_reads_back_with_its_hu_and_geometry(phantom, tmp_path):
    hu, _, affine = phantom
    write_dicom_series(hu, affine, tmp_path / "ct", SeriesInfo(rescale=(0.5, -1024.0)))
    array, read_affine = load_image(tmp_path / "ct")
    assert np.array_equal(array, hu)  # stored (HU + 1024) / 0.5, read back through slope and intercept
    assert np.allclose(read_affine, affine, atol=1e-6)


def test_a_study_folder_lists_its_series_and_a_case_is_picked_by_modality_description_or_uid(phantom, tmp_path):
    study = _study(tmp_path / "study", phantom)
    assert sorted((s.modality, s.description, len(s.files)) for s in dicom_series(study)) == [
        ("CT", "arterial phase", 24), ("MR", "T1", 24)]
    with pytest.raises(UserError, match="2 series of: .*arterial phase.*T1.*set data.dicom_series"):
        load_image(study)
    hu = phantom[0]
    assert np.array_equal(load_image(study, dicom_series="modality=MR")[0], hu + 2000)
    assert np.array_equal(load_image(study, dicom_series="description=arterial")[0], hu)
    assert np.array_equal(load_image(study, dicom_series="uid=1.2.3.4.2")[0], hu + 2000)
    with pytest.raises(UserError, match="data.dicom_series=modality=PT matches 0"):
        load_image(study, dicom_series="modality=PT")


def test_the_check_lists_the_series_of_each_case_and_marks_the_one_read(phantom, tmp_path):
    study = _study(tmp_path / "root" / "case_000", phantom)
    nib.save(nib.Nifti1Image(phantom[1], phantom[2]), tmp_path / "root" / "case_000_label.nii.gz")
    (tmp_path / "root" / "cases.csv").write_text("image,label\ncase_000,case_000_label.nii.gz\n")
    data = DataConfig(root=str(tmp_path / "root"), layout="list", list="cases.csv", dicom_series="modality=CT")
    report = check_dataset(load_dataset(data.root, data), data)
    text = format_report(report)
    assert not report.errors, text  # the CT series is the case, on the label's grid
    assert "DICOM series of case_000 (2):" in text
    assert "  * 1.2.3.4.1 (CT, 'arterial phase', 24 files)" in text and "    1.2.3.4.2 (MR, 'T1', 24 files)" in text


def test_a_series_mixing_image_sizes_is_refused_by_name(phantom, tmp_path):
    hu, _, affine = phantom
    write_dicom_series(hu, affine, tmp_path / "ct", SeriesInfo(series_uid="1.2.3.9"))
    write_dicom_series(hu[:40, :, :1], affine, tmp_path / "small", SeriesInfo(series_uid="1.2.3.9"))
    (tmp_path / "small" / "slice_0000.dcm").rename(tmp_path / "ct" / "odd.dcm")
    with pytest.raises(UserError, match=r"ct: series 1\.2\.3\.9 mixes 2 image sizes or orientations"):
        load_image(tmp_path / "ct")


def _world_resample(values: np.ndarray, values_affine: np.ndarray, target_shape, target_affine) -> np.ndarray:
    """``values`` (on ``values_affine``, LPS) at every voxel of the target grid (its affine in LPS)."""
    mapping = np.linalg.inv(values_affine) @ target_affine
    assert np.allclose(mapping[:3, :3], np.round(mapping[:3, :3]), atol=1e-6)  # the grids coincide
    ijk = np.indices(target_shape).reshape(3, -1)
    index = np.round(mapping[:3, :3] @ ijk + mapping[:3, 3:]).astype(int)
    return values[tuple(index)].reshape(target_shape)


def test_dicom_seg_reads_back_in_highdicom_equal_to_the_label_in_world_coordinates(phantom, tmp_path):
    hu, label, affine = phantom
    write_dicom_series(hu, affine, tmp_path / "ct", SeriesInfo(frame_of_reference_uid="1.2.3.7"))
    out = write_dicom_seg(label, tmp_path / "ct", LABELS, tmp_path / "case.seg.dcm", Algorithm("resunet", "run-1", "9"))
    seg = hd.seg.segread(out)  # highdicom validates the object as it reads it
    assert seg.FrameOfReferenceUID == "1.2.3.7" and seg.Modality == "SEG"
    sources = {pydicom.dcmread(p).SOPInstanceUID for p in (tmp_path / "ct").iterdir()}
    assert {uid for _, _, uid in seg.get_source_image_uids()} == sources
    volume = seg.get_volume(combine_segments=True)  # (frames, rows, columns) with its affine in LPS
    ours = _world_resample(volume.array, volume.affine, label.shape, RAS_TO_LPS @ affine)
    assert np.array_equal(ours, label)
    described = [seg.get_segment_description(n) for n in seg.get_segment_numbers()]
    assert [d.segment_label for d in described] == ["organ", "vessel"]
    assert [(d.segmented_property_type.value, d.segmented_property_type.scheme_designator) for d in described] == [
        ("91772007", "SCT"), ("59820001", "SCT")]  # Organ, Blood vessel
    colours = [hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb() for d in described]
    assert [tuple(c) for c in colours] == [COLOURS["organ"], COLOURS["vessel"]]
    algorithm = described[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion, algorithm.AlgorithmSource) == ("resunet", "9", "run-1")


def test_a_fractional_seg_holds_the_probabilities_in_eight_bits(phantom, tmp_path):
    hu, label, affine = phantom
    write_dicom_series(hu, affine, tmp_path / "ct", SeriesInfo())
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=label.shape).transpose(3, 0, 1, 2).astype(np.float32)
    out = write_dicom_seg(label, tmp_path / "ct", LABELS, tmp_path / "p.seg.dcm", Algorithm("resunet", "run-1"),
                          probabilities=probabilities)
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "FRACTIONAL" and seg.MaximumFractionalValue == 255
    volume = seg.get_volume(combine_segments=False)  # (frames, rows, columns, segments), scaled back to [0, 1]
    for number in (1, 2):
        values = _world_resample(volume.array[..., number - 1], volume.affine, label.shape, RAS_TO_LPS @ affine)
        assert np.abs(values - probabilities[number]).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("value", ["CT", "series=1.2", "description=([", "uid="])
def test_a_series_selector_that_is_not_one_is_refused_by_the_config(value):
    with pytest.raises(UserError, match="data.dicom_series must be modality=CT, description=REGEX"):
        load_config(None, [f"data.dicom_series={value}"])


def test_seg_nrrd_reads_back_in_slicerio_with_names_colours_and_the_grid(phantom, tmp_path):
    _, label, affine = phantom
    read = slicerio.read_segmentation(str(write_seg_nrrd(label, affine, LABELS, tmp_path / "case.seg.nrrd")))
    assert [(s["name"], s["labelValue"]) for s in read["segments"]] == [("organ", 1), ("vessel", 2)]
    assert [tuple(round(255 * c) for c in s["color"]) for s in read["segments"]] == list(COLOURS.values())
    assert np.allclose(read["ijkToLPS"], RAS_TO_LPS @ affine) and np.array_equal(read["voxels"], label)


def test_batch_evaluation_scores_the_nifti_and_leaves_the_clinical_copies_beside_it(phantom, tmp_path):
    from pipeline.evaluate.folder import pair_files

    hu, label, affine = phantom
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for folder in ("pred", "ref"):
        nib.save(nib.Nifti1Image(label, affine), tmp_path / folder / "case_1.nii.gz")
    write_seg_nrrd(label, affine, LABELS, tmp_path / "pred" / "case_1.seg.nrrd")
    write_dicom_series(hu, affine, tmp_path / "ct", SeriesInfo())
    write_dicom_seg(label, tmp_path / "ct", LABELS, tmp_path / "pred" / "case_1.seg.dcm", Algorithm("resunet", "r"))
    assert [(c, p.name) for c, p, _, _ in pair_files(tmp_path / "pred", tmp_path / "ref")] == [
        ("case_1", "case_1.nii.gz")]


@pytest.mark.slow
def test_test_py_writes_seg_and_seg_nrrd_equal_to_its_nifti_for_dicom_cases(smoke_run, phantom, tmp_path):
    hu, _, affine = phantom
    write_dicom_series(hu, affine, tmp_path / "images" / "patient_1", SeriesInfo())
    formats = ("--set", "infer.output_format=[nrrd-seg, dicom-seg]")
    result = run_cli("test.py", "--run", str(smoke_run), "--images", str(tmp_path / "images"),
                     "--out", str(tmp_path / "out"), *formats)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = tmp_path / "out" / "predictions"
    nifti = nib.load(predictions / "patient_1.nii.gz")
    label = np.asarray(nifti.dataobj)
    assert label.any()  # the smoke network predicts something to compare
    seg = hd.seg.segread(predictions / "patient_1.seg.dcm")
    volume = seg.get_volume(combine_segments=True)
    assert np.array_equal(_world_resample(volume.array, volume.affine, label.shape, RAS_TO_LPS @ nifti.affine), label)
    nrrd = slicerio.read_segmentation(str(predictions / "patient_1.seg.nrrd"))
    assert np.array_equal(nrrd["voxels"], label) and np.allclose(nrrd["ijkToLPS"], RAS_TO_LPS @ nifti.affine)
    assert seg.get_segment_description(1).SegmentationAlgorithmIdentificationSequence[0].AlgorithmSource == (
        smoke_run.name)


def test_dicom_seg_for_a_case_not_read_from_dicom_is_one_line_before_any_output(smoke_run, tiny_dataset, tmp_path):
    result = run_cli("test.py", "--run", str(smoke_run), "--images", str(tiny_dataset / "imagesTs"),
                     "--out", str(tmp_path / "out"), "--set", "infer.output_format=dicom-seg")
    assert result.returncode != 0
    assert "dicom-seg needs a DICOM source, and case case_004 is not a DICOM series" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
