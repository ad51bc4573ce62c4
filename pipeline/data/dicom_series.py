"""Writing a volume as a DICOM image series (one file per slice, pydicom): how the demo phantom becomes
the CT study a hospital system would send, for the DICOM round trip of tests and demos.

Geometry follows DICOM's patient coordinates (LPS): ImageOrientationPatient holds the directions of a
row (along x, the columns) and of a column (along y, the rows), ImagePositionPatient the centre of each
slice's first voxel, PixelSpacing (row spacing, column spacing) = (y, x) voxel sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class SeriesInfo:
    """What distinguishes a series within a study."""

    modality: str = "CT"
    description: str = "phantom"
    series_uid: str | None = None  # generated when None
    study_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_number: int = 1
    rescale: tuple[float, float] = (1.0, -1024.0)  # slope, intercept: stored value * slope + intercept


def write_dicom_series(volume: np.ndarray, affine: np.ndarray, folder: Path, info: SeriesInfo = SeriesInfo()
                       ) -> list[Path]:
    """``volume`` (x, y, z; CT in HU) with its voxel-to-RAS ``affine`` as ``folder/slice_####.dcm``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    slope, intercept = info.rescale
    stored = np.round((np.asarray(volume, dtype=np.float64) - intercept) / slope).astype(np.uint16)
    uids = {"series": info.series_uid or generate_uid(), "study": info.study_uid or generate_uid(),
            "frame": info.frame_of_reference_uid or generate_uid()}
    sop_class = CT_IMAGE_STORAGE if info.modality == "CT" else MR_IMAGE_STORAGE
    paths = []
    for k in range(stored.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = _slice_dataset(meta, info, uids, stored[:, :, k].T, k)
        ds.ImageOrientationPatient = _ds([*row_dir, *col_dir])
        ds.ImagePositionPatient = _ds(lps[:3, 3] + k * lps[:3, 2])
        ds.PixelSpacing = _ds([spacing[1], spacing[0]])
        ds.SliceThickness = _ds([spacing[2]])[0]
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        paths.append(folder / f"slice_{k:04d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _ds(values) -> list:
    """Decimal strings of at most 16 characters, as the DS value representation allows."""
    from pydicom.valuerep import DSfloat

    return [DSfloat(float(v), auto_format=True) for v in values]


def _slice_dataset(meta, info: SeriesInfo, uids: dict, pixels: np.ndarray, k: int):
    """The patient, study, series and image modules of slice ``k`` (``pixels``: rows x columns, uint16)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "Phantom^Demo", "PHANTOM", "O", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame"], ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesDescription, ds.SeriesNumber = info.modality, info.description, info.series_number
    ds.Manufacturer, ds.InstanceNumber, ds.AcquisitionNumber = "medseg-pipeline phantom", k + 1, 1
    # a phantom is no paired body part: no Laterality (dciodvfy finds no error in these files)
    ds.PatientPosition, ds.ImageType, ds.KVP = "HFS", ["ORIGINAL", "PRIMARY", "AXIAL"], ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    return ds
