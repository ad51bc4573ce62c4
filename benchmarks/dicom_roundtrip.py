"""The DICOM round trip, end to end: a generated CT study in, DICOM SEG and .seg.nrrd out, read back.

    python benchmarks/dicom_roundtrip.py --run outputs/latest --work /tmp/dicom-roundtrip

Writes a demo phantom as a study folder holding two series (CT "arterial phase" and an MR-like "T1"),
shows what the dataset check lists, reads the case by modality and by description, predicts it with
``test.py --images ... --set data.dicom_series=modality=CT infer.output_format=[nrrd-seg, dicom-seg]``,
then reads the SEG back with highdicom and the .seg.nrrd with slicerio and compares both voxel for voxel
with the NIfTI prediction in world coordinates. Runs ``dciodvfy`` (dicom3tools) on the SEG when installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_study(work: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """``work/study/images/patient_1``: the phantom as two series; returns (images folder, HU, affine)."""
    from pipeline.data.dicom_series import SeriesInfo, write_dicom_series
    from pipeline.data.synthetic import PhantomSpec, make_phantom

    image, _, affine = make_phantom(PhantomSpec(shape=(96, 96, 48), n_train=1, n_test=0, seed=11), 0)
    hu = np.round(image).clip(-1024, None)
    case = work / "study" / "images" / "patient_1"
    write_dicom_series(hu, affine, case, SeriesInfo("CT", "arterial phase", series_number=1))
    write_dicom_series(hu + 2000, affine, case / "t1", SeriesInfo("MR", "T1", series_number=2))
    for path in (case / "t1").iterdir():
        path.rename(case / f"t1_{path.name}")
    (case / "t1").rmdir()
    return case.parent, hu, affine


def show_series(images: Path, hu: np.ndarray, affine: np.ndarray) -> None:
    from pipeline.data.check_report import series_lines
    from pipeline.data.check import CheckReport
    from pipeline.data.cases import Case, Dataset
    from pipeline.data.io import load_image

    case = images / "patient_1"
    dataset = Dataset(root=images, layout="images", training=(), test=(Case("patient_1", case, None),),
                      labels={0: "background"}, modalities=("image",))
    print("\n".join(series_lines(CheckReport(dataset, dicom_series="modality=CT"))))
    for selector in ("modality=CT", "description=arterial", "modality=MR"):
        array, read_affine = load_image(case, dicom_series=selector)
        offset = 2000 if selector == "modality=MR" else 0
        print(f"{selector}: HU equal {np.array_equal(array, hu + offset)}, "
              f"affine max difference {np.abs(read_affine - affine).max():.2g} mm")


def read_back(out: Path) -> None:
    import highdicom as hd
    import nibabel as nib
    import slicerio

    from pipeline.data.dicom_series import RAS_TO_LPS

    nifti = nib.load(out / "predictions" / "patient_1.nii.gz")
    label, lps = np.asarray(nifti.dataobj), RAS_TO_LPS @ nifti.affine
    seg = hd.seg.segread(out / "predictions" / "patient_1.seg.dcm")
    volume = seg.get_volume(combine_segments=True)
    mapping = np.linalg.inv(volume.affine) @ lps
    index = np.round(mapping[:3, :3] @ np.indices(label.shape).reshape(3, -1) + mapping[:3, 3:]).astype(int)
    on_grid = volume.array[tuple(index)].reshape(label.shape)
    print(f"DICOM SEG: {seg.SegmentationType}, {len(seg.get_segment_numbers())} segments, frame of reference "
          f"{seg.FrameOfReferenceUID}; voxels equal to the NIfTI prediction: {np.array_equal(on_grid, label)} "
          f"({int((label > 0).sum())} foreground voxels)")
    for number in seg.get_segment_numbers():
        d = seg.get_segment_description(number)
        rgb = hd.color.CIELabColor.from_dicom_value(d.RecommendedDisplayCIELabValue).to_rgb()
        print(f"  segment {number}: {d.segment_label!r}, category {d.segmented_property_category.meaning}, "
              f"type {d.segmented_property_type.meaning} (SCT {d.segmented_property_type.value}), colour {rgb}, "
              f"algorithm {d.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName}")
    nrrd = slicerio.read_segmentation(str(out / "predictions" / "patient_1.seg.nrrd"))
    print(f".seg.nrrd (slicerio): voxels equal {np.array_equal(nrrd['voxels'], label)}, geometry equal "
          f"{np.allclose(nrrd['ijkToLPS'], lps)}; segments "
          + ", ".join(f"{s['name']} {[round(255 * c) for c in s['color']]}" for s in nrrd["segments"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run folder (the demo's)")
    parser.add_argument("--work", type=Path, required=True, help="a new folder")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=False)
    images, hu, affine = make_study(args.work)
    show_series(images, hu, affine)
    out = args.work / "test"
    subprocess.run([sys.executable, "test.py", "--run", args.run, "--images", str(images), "--out", str(out),
                    "--set", "data.dicom_series=modality=CT", "infer.output_format=[nrrd-seg, dicom-seg]"],
                   cwd=REPO, check=True, capture_output=True)
    read_back(out)
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", str(out / "predictions" / "patient_1.seg.dcm")], capture_output=True,
                                 text=True)
        print("dciodvfy:", (checked.stdout + checked.stderr).strip().replace("\n", " | "))


if __name__ == "__main__":
    main()
