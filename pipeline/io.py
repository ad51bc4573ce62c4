"""Reading volumes with their geometry and writing label maps in a reference's geometry.

Arrays are in the file's voxel order (x, y, z), as nibabel and MONAI's
``NibabelReader`` return them; SimpleITK arrays are transposed to match.
Spacing is in mm. Writes are atomic: a temporary file in the target folder is
renamed into place, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from .errors import UserError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
MAX_VOXELS = 2**31  # refuse headers that declare more voxels than this (8 GB as float32)


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume: shape, spacing (mm), origin (mm) and direction (row-major 3x3), ITK's LPS."""

    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]


def case_id(path: str | Path) -> str:
    """File name without its image suffix: ``case_001.nii.gz`` -> ``case_001``."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES + (".h5", ".hdf5", ".png", ".tif", ".tiff", ".gif", ".jpg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_volume_file(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def read_geometry(path: str | Path) -> Geometry:
    """Geometry from the header alone (no voxel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise UserError(f"{path}: cannot read image header ({_first_line(err)})") from None
    return Geometry(
        shape=tuple(int(s) for s in reader.GetSize()),
        spacing=tuple(float(s) for s in reader.GetSpacing()),
        origin=tuple(float(s) for s in reader.GetOrigin()),
        direction=tuple(float(s) for s in reader.GetDirection()),
    )


def read_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxel array (x, y, z) and spacing (mm) of a NIfTI, MHA/MHD or NRRD file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    geometry = read_geometry(path)
    if int(np.prod(geometry.shape, dtype=np.int64)) > MAX_VOXELS:
        raise UserError(f"{path}: header declares {geometry.shape} voxels, more than this tool accepts")
    try:
        if str(path).lower().endswith(NIFTI_SUFFIXES):
            image = nib.load(str(path))
            return np.asanyarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])
        image = sitk.ReadImage(str(path))
        return sitk.GetArrayFromImage(image).transpose(), tuple(image.GetSpacing())
    except (OSError, EOFError, ValueError, RuntimeError) as err:
        raise UserError(f"{path}: cannot read image data ({_first_line(err)})") from None


def write_label_like(label: np.ndarray, reference: str | Path, out: str | Path) -> Path:
    """Save ``label`` (x, y, z) as ``out`` (.nii.gz) in the exact geometry of ``reference``.

    A NIfTI reference keeps its affine, qform and sform through nibabel; other
    formats copy spacing, origin and direction through SimpleITK.
    """
    reference, out = Path(reference), Path(out)
    label = np.asarray(label)
    if label.dtype.kind not in "biu":
        raise ValueError(f"label map must be integer, got {label.dtype}")
    label = label.astype(np.uint8 if label.max(initial=0) < 256 else np.uint16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    try:
        if str(reference).lower().endswith(NIFTI_SUFFIXES):
            ref = nib.load(str(reference))
            if tuple(ref.shape[:3]) != label.shape:
                raise ValueError(f"label shape {label.shape} differs from {reference} shape {ref.shape[:3]}")
            header = ref.header.copy()
            header.set_data_dtype(label.dtype)
            image = nib.Nifti1Image(label, ref.affine, header)
            image.set_qform(ref.header.get_qform(), code=int(ref.header["qform_code"]))
            image.set_sform(ref.header.get_sform(), code=int(ref.header["sform_code"]))
            image.header.set_slope_inter(1.0, 0.0)
            nib.save(image, str(tmp))
        else:
            geometry = read_geometry(reference)
            if geometry.shape != label.shape:
                raise ValueError(f"label shape {label.shape} differs from {reference} shape {geometry.shape}")
            write_label_with_geometry(label, geometry, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write_label_with_geometry(label: np.ndarray, geometry: Geometry, out: str | Path) -> None:
    """Save ``label`` (x, y, z) with an explicit geometry through SimpleITK (format from the suffix)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(label).transpose()))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(out), useCompression=True)


def save_nifti(array: np.ndarray, affine: np.ndarray, out: str | Path) -> None:
    """Write an array with an affine (RAS, mm) as NIfTI, qform and sform both set."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(out))


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel sizes (mm) from the columns of a 4x4 affine."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


def check_same_grid(a: Sequence[float], b: Sequence[float], what: str, tol: float = 1e-3) -> bool:
    """True when two spacing/origin vectors agree within ``tol`` (relative)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=tol, atol=tol))
