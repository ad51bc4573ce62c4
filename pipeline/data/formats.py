"""Readers of the formats whose data needs more than one library call: ITK images and DICOM series
(geometry converted from ITK's LPS to the voxel-to-RAS affine nibabel uses) and HDF5 arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk

from ..errors import UserError

MAX_VOXELS = 2**31  # refuse headers that declare more voxels than this (8 GB as float32)


def affine_from_itk(spacing, origin, direction) -> np.ndarray:
    """ITK geometry (LPS) -> voxel-to-RAS affine, as nibabel writes it."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(spacing)
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def itk_to_array(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The voxels (x, y, z[, c]) of an ITK image and its voxel-to-RAS affine."""
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
    array = array.transpose(2, 1, 0, 3) if array.ndim == 4 else array.transpose(2, 1, 0)
    return array, affine_from_itk(image.GetSpacing(), image.GetOrigin(), image.GetDirection())


@dataclass(frozen=True)
class Series:
    """One DICOM series of a folder: its SeriesInstanceUID, modality, description and files in slice order."""

    uid: str
    modality: str
    description: str
    files: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.uid} ({self.modality or '?'}, {self.description or 'no description'!r}, {len(self.files)} files)"


def dicom_series(folder: Path) -> list[Series]:
    """Every series in ``folder`` (GDCM groups files by SeriesInstanceUID and sorts them along the normal)."""
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        header = sitk.ImageFileReader()
        header.SetFileName(files[0])
        header.ReadImageInformation()
        found.append(Series(uid, _tag(header, "0008|0060"), _tag(header, "0008|103e"), tuple(files)))
    return found


def _tag(header: sitk.ImageFileReader, key: str) -> str:
    return header.GetMetaData(key).strip() if header.HasMetaDataKey(key) else ""


def pick_series(folder: Path, selector: str | None = None, series: list[Series] | None = None) -> Series:
    """The series of ``folder`` that ``selector`` (``data.dicom_series``: ``modality=CT``,
    ``description=REGEX`` or ``uid=UID``) names; without one, the folder's only series. ``series``: the
    folder's ``dicom_series`` when already read."""
    series = dicom_series(folder) if series is None else series
    if not series:
        raise UserError(f"{folder}: no DICOM series found")
    if selector is None:
        chosen = series
    else:
        key, _, value = selector.partition("=")
        tests = {"modality": lambda s: s.modality.upper() == value.upper(),
                 "description": lambda s: re.search(value, s.description, re.IGNORECASE) is not None,
                 "uid": lambda s: s.uid == value}
        chosen = [s for s in series if tests[key](s)]
    if len(chosen) != 1:
        listed = "; ".join(s.describe() for s in series)
        wanted = f"data.dicom_series={selector} matches {len(chosen)}" if selector else f"{len(series)} series"
        raise UserError(f"{folder}: {wanted} of: {listed}; set data.dicom_series to modality=..., description=... "
                        "or uid=... to pick one")
    return chosen[0]


def read_dicom(folder: Path, selector: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One DICOM series of ``folder`` (``pick_series``), rescale slope and intercept applied (by GDCM); a
    series mixing orientations or image sizes, a missing slice or uneven slice spacing is refused by name."""
    series = pick_series(folder, selector)
    files = series.files
    positions, frames = [], set()
    for name in files:
        header = sitk.ImageFileReader()
        header.SetFileName(name)
        header.ReadImageInformation()
        positions.append(np.asarray(header.GetOrigin()))
        frames.add((header.GetSize()[:2], tuple(np.round(header.GetDirection(), 4))))
    if len(frames) > 1:
        raise UserError(f"{folder}: series {series.uid} mixes {len(frames)} image sizes or orientations; "
                        "split it into one series per size and orientation")
    normal = np.asarray(next(iter(frames))[1]).reshape(3, 3)[:, 2]
    if len(files) > 2:
        steps = np.diff([float(p @ normal) for p in positions])
        expected = float(np.median(steps))
        for i, step in enumerate(steps):
            if abs(step - expected) > 0.05 * abs(expected) + 1e-3:
                raise UserError(f"{folder}: slice gap between {Path(files[i]).name} and {Path(files[i + 1]).name}: "
                                f"{step:.3g} mm where the series has {expected:.3g} mm (missing or duplicate slice?)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    return itk_to_array(reader.Execute())


def read_h5(path: Path, key: str, default_spacing) -> tuple[np.ndarray, np.ndarray]:
    """The array ``key`` of an HDF5 file and a diagonal affine from its ``spacing`` attribute (or the default)."""
    with h5py.File(path, "r") as f:
        if key not in f:
            raise UserError(f"{path}: no dataset {key!r} (it has {', '.join(f.keys()) or 'none'}); "
                            "set data.h5_image_key / data.h5_label_key")
        dataset = f[key]
        if not isinstance(dataset, h5py.Dataset):
            raise UserError(f"{path}: {key!r} is a group, not an array; set data.h5_image_key / data.h5_label_key "
                            "to the array's path (e.g. group/image)")
        if dataset.size > MAX_VOXELS:
            raise UserError(f"{path}: dataset {key!r} declares {dataset.shape} voxels, more than this tool accepts")
        array = dataset[()]
        spacing = dataset.attrs.get("spacing", f.attrs.get("spacing", default_spacing))
    return array, np.diag([*h5_spacing(spacing, path), 1.0])


def h5_spacing(value, path: Path) -> list[float]:
    """The three voxel sizes (mm) of an HDF5 ``spacing`` attribute; UserError unless three positive numbers."""
    try:
        spacing = [float(v) for v in np.atleast_1d(value)]
    except (TypeError, ValueError):
        spacing = []
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise UserError(f"{path}: spacing attribute {np.atleast_1d(value).tolist()} is not three positive voxel "
                        "sizes (mm); fix it, or remove it and set data.default_spacing")
    return spacing
