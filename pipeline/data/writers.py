"""Writing label maps and arrays in a source's own geometry (NIfTI, MHA/NRRD), atomically."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..files import atomic_write
from .io import Geometry, kind_of, read_geometry


def write_label_like(label: np.ndarray, reference: str | Path, out: str | Path,
                     affine: np.ndarray | None = None) -> Path:
    """Save ``label`` (x, y, z) as ``out`` (.nii.gz) in the exact geometry of ``reference``.

    A NIfTI reference keeps its affine, qform and sform through nibabel; MHA/NRRD
    references give spacing, origin and direction through SimpleITK; sources
    without a header of their own (HDF5, slices, 2D images, DICOM folders) use
    ``affine`` (voxel -> RAS mm, as ``load_image`` returned it).
    """
    reference, out = Path(reference), Path(out)
    label = np.asarray(label)
    if label.dtype.kind not in "biu":
        raise ValueError(f"label map must be integer, got {label.dtype}")
    label = label.astype(np.uint8 if label.max(initial=0) < 256 else np.uint16)
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = kind_of(reference)
    if kind == "nifti":
        ref = nib.load(str(reference))
        if tuple(ref.shape[:3]) != label.shape:
            raise ValueError(f"label shape {label.shape} differs from {reference} shape {ref.shape[:3]}")
        header = ref.header.copy()
        header.set_data_dtype(label.dtype)
        image = nib.Nifti1Image(label, ref.affine, header)
        image.set_qform(ref.header.get_qform(), code=int(ref.header["qform_code"]))
        image.set_sform(ref.header.get_sform(), code=int(ref.header["sform_code"]))
        image.header.set_slope_inter(1.0, 0.0)
        return atomic_write(out, lambda tmp: nib.save(image, str(tmp)))
    if kind == "itk":
        geometry = read_geometry(reference)
        if geometry.shape != label.shape:
            raise ValueError(f"label shape {label.shape} differs from {reference} shape {geometry.shape}")
        return atomic_write(out, lambda tmp: write_label_with_geometry(label, geometry, tmp))
    if affine is None:
        raise ValueError(f"{reference} has no header to copy: pass the affine it was loaded with")
    return save_nifti(label, np.asarray(affine, dtype=np.float64), out)


def write_label_with_geometry(label: np.ndarray, geometry: Geometry, out: str | Path) -> None:
    """Save ``label`` (x, y, z) with an explicit geometry through SimpleITK (format from the suffix)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(label).transpose()))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    sitk.WriteImage(image, str(out), useCompression=True)


def save_nifti(array: np.ndarray, affine: np.ndarray, out: str | Path) -> Path:
    """Write an array with an affine (RAS, mm) as NIfTI, qform and sform both set (atomically)."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return atomic_write(out, lambda tmp: nib.save(image, str(tmp)))


def write_label_planes(planes: Iterable[np.ndarray], shape: tuple[int, int, int], reference: str | Path,
                       affine: np.ndarray, out: str | Path) -> Path:
    """Save a uint8 label volume of ``shape`` given as its (x, y) planes in stored slice order, one plane
    at a time, as ``out`` (.nii.gz) with the geometry of the NIfTI ``reference`` (other references:
    ``affine``), as ``write_label_like`` would write the whole array: memory is one plane.

    A NIfTI file is a 352-byte header followed by the voxels, x fastest: so the header nibabel makes
    for the volume, then each plane in Fortran order, go through one gzip stream.
    """
    reference, out = Path(reference), Path(out)
    if kind_of(reference) == "nifti":
        ref = nib.load(str(reference))
        image = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), ref.affine, ref.header.copy())
        image.set_qform(ref.header.get_qform(), code=int(ref.header["qform_code"]))
        image.set_sform(ref.header.get_sform(), code=int(ref.header["sform_code"]))
    else:
        image = nib.Nifti1Image(np.zeros((1, 1, 1), np.uint8), affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    header = image.header
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_slope_inter(1.0, 0.0)
    header.set_data_offset(352)
    header.extensions.clear()

    def write(tmp: Path) -> None:
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            f.write(header.binaryblock + b"\0" * 4)  # 348-byte header, then 4 bytes: no extensions
            for plane in planes:
                if plane.shape != shape[:2]:
                    raise ValueError(f"plane shape {plane.shape} differs from the volume's {shape[:2]}")
                f.write(np.asarray(plane, dtype=np.uint8).tobytes(order="F"))

    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, write)
