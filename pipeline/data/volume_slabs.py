"""Volume files read slab by slab: a NIfTI, HDF5 or MetaImage case larger than memory, never loaded whole.

``VolumeSlabs`` reads consecutive slices along the last axis as ``SliceStack``
does for folders of slices, so the dataset check, the lazy stores, streamed
prediction and slab-by-slab metrics take either. The slabs come in the
orientation the in-memory path gives the network (MONAI's ``Orientationd`` to
RAS): an axis stored reversed is flipped, in-plane per slab and along the slice
axis by reading the slices from the other end. A volume whose axes are stored
permuted (a sagittal acquisition, say) cannot be reoriented slab by slab and is
refused with the way out.

Only formats whose library reads a slab without the rest stream: NIfTI
(nibabel's array proxy; a ``.nii.gz`` is decompressed once, front to back, with
the file kept open), HDF5 (h5py) and MetaImage (``.mha`` / ``.mhd``: ITK's reader
extracts a slab; a compressed one is decompressed from its start for every
slab). NRRD is refused above the streaming threshold, naming a conversion: ITK
reads a whole NRRD to extract any part of it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..config import DataConfig
from ..errors import UserError
from .formats import affine_from_itk, h5_spacing
from .channel_files import channel_files
from .io import case_id, check_nifti_size, kind_of, read_geometry, spacing_or_default
from .stack import SLAB, SliceStack

STREAMED_KINDS = ("nifti", "h5", "itk")
METAIMAGE_SUFFIXES = (".mha", ".mhd")


class VolumeSlabs:
    """The voxels of a NIfTI, HDF5 or MetaImage file as an (x, y, z) RAS volume read by slab.

    ``affine`` is the file's own voxel-to-world matrix (its stored axis order), for writing outputs in the
    source geometry; ``flips`` says which axes the slabs reverse relative to it.
    """

    def __init__(self, path: str | Path, h5_key: str = "image", default_spacing=(1.0, 1.0, 1.0)):
        self.path = Path(path)
        kind = kind_of(self.path)
        if kind not in STREAMED_KINDS or (kind == "itk" and not self.path.name.lower().endswith(METAIMAGE_SUFFIXES)):
            raise UserError(f"{self.path}: only NIfTI, HDF5 and MetaImage volumes are read slab by slab; convert it "
                            "once, e.g. SimpleITK.WriteImage(SimpleITK.ReadImage(path), 'case.nii.gz'), or raise the "
                            "size settings (data.lazy: never, infer.stream_voxels) to read it whole")
        if kind == "itk":
            self._data = _MetaImageSlabs(self.path)
            self.affine = self._data.affine
        elif kind == "nifti":
            image = nib.load(str(self.path), keep_file_open=True)
            check_nifti_size(self.path, image)
            self._data, self.affine = image.dataobj, np.asarray(image.affine, dtype=np.float64)
        else:
            self._file = h5py.File(self.path, "r")
            if h5_key not in self._file or not isinstance(self._file[h5_key], h5py.Dataset):
                raise UserError(f"{self.path}: no dataset {h5_key!r}; set data.h5_image_key / data.h5_label_key")
            self._data = self._file[h5_key]
            spacing = self._data.attrs.get("spacing", self._file.attrs.get("spacing", default_spacing))
            self.affine = np.diag([*h5_spacing(spacing, self.path), 1.0])
        shape = tuple(int(n) for n in self._data.shape)
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise UserError(f"{self.path}: expected one 3D volume to read slab by slab, got shape {shape}")
        self.shape = shape
        self.flips = _flips_to_ras(self.affine, self.path)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along each axis."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def slab(self, start: int, stop: int) -> np.ndarray:
        """RAS slices ``start`` to ``stop`` (exclusive) as an (x, y, stop - start) array."""
        depth = self.shape[2]
        lo, hi = (depth - stop, depth - start) if self.flips[2] else (start, stop)
        try:
            data = np.asarray(self._data[:, :, lo:hi] if len(self._data.shape) == 3 else self._data[:, :, lo:hi, 0])
        except (OSError, EOFError, ValueError, RuntimeError, zlib.error) as err:  # a damaged file, found mid-way
            raise UserError(f"{self.path}: cannot read slices {lo} to {hi} ({' '.join(str(err).split())[:200]}); "
                            "the file is damaged") from None
        axes = tuple(a for a in range(3) if self.flips[a])
        return np.ascontiguousarray(np.flip(data, axes)) if axes else data

    def slabs(self, thickness: int = SLAB) -> Iterator[tuple[int, np.ndarray]]:
        """(first slice, slab) for consecutive slabs covering the volume."""
        for start in range(0, self.shape[2], thickness):
            yield start, self.slab(start, min(start + thickness, self.shape[2]))

    def ras_affine(self) -> np.ndarray:
        """The voxel-to-world matrix of the slabs' (flipped) grid."""
        flip = np.eye(4)
        for axis in range(3):
            if self.flips[axis]:
                flip[axis, axis], flip[axis, 3] = -1.0, self.shape[axis] - 1
        return self.affine @ flip


class _MetaImageSlabs:
    """A MetaImage file as an (x, y, z) array proxy whose ``[:, :, lo:hi]`` ITK reads without the rest."""

    def __init__(self, path: Path):
        self._reader = sitk.ImageFileReader()
        self._reader.SetFileName(str(path))
        self._reader.ReadImageInformation()
        if self._reader.GetDimension() != 3 or self._reader.GetNumberOfComponents() != 1:
            raise UserError(f"{path}: expected one 3D volume to read slab by slab, got {self._reader.GetDimension()}D "
                            f"with {self._reader.GetNumberOfComponents()} component(s)")
        self.shape = tuple(self._reader.GetSize())
        self.affine = affine_from_itk(self._reader.GetSpacing(), self._reader.GetOrigin(), self._reader.GetDirection())

    def __getitem__(self, index: tuple[slice, slice, slice]) -> np.ndarray:
        lo, hi, _ = index[2].indices(self.shape[2])
        self._reader.SetExtractIndex((0, 0, lo))
        self._reader.SetExtractSize((self.shape[0], self.shape[1], hi - lo))
        return sitk.GetArrayFromImage(self._reader.Execute()).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)


def _flips_to_ras(affine: np.ndarray, path: Path) -> tuple[bool, bool, bool]:
    """Which stored axes run against RAS; UserError when the axes are permuted (not streamable)."""
    ornt = nib.orientations.io_orientation(affine)
    if list(ornt[:, 0]) != [0, 1, 2]:
        codes = "".join(nib.orientations.aff2axcodes(affine))
        raise UserError(f"{path}: its axes are stored in {codes} order, which cannot be reoriented to RAS slab by "
                        "slab; resample it once to an axial (R/L, A/P, S/I) axis order, or read it whole "
                        "(data.lazy: never, a larger infer.stream_voxels)")
    return tuple(bool(v < 0) for v in ornt[:, 1])


def volume_voxels(path: Path, h5_key: str = "image") -> int | None:
    """Voxel count of a slice stack or volume file from headers alone; None for DICOM folders, 2D images
    and files whose header cannot be read (the whole-volume reader then reports those with its own line)."""
    path = Path(path)
    if path.is_dir():  # a stack's slice headers; a bad slice is named here (UserError)
        return int(np.prod(SliceStack(path).shape, dtype=np.int64)) if kind_of(path) == "stack" else None
    try:
        kind = kind_of(path)
        if kind == "nifti":
            return int(np.prod(nib.load(str(path)).shape[:3], dtype=np.int64))
        if kind == "h5":
            with h5py.File(path, "r") as f:
                return int(f[h5_key].size) if isinstance(f.get(h5_key), h5py.Dataset) else None
        if kind == "itk":
            return int(np.prod(read_geometry(path).shape, dtype=np.int64))
    except (UserError, OSError, ValueError, MemoryError, EOFError, nib.filebasedimages.ImageFileError,
            nib.spatialimages.HeaderDataError):
        return None
    return None


SlabSource = SliceStack | VolumeSlabs  # a volume read by slab: ``path``, ``shape``, ``slab(a, b)``, ``slabs()``


def slab_source(path: Path, d: DataConfig, label: bool = False) -> SlabSource:
    """A case's image or label read by slab: a folder of slices, or a NIfTI / HDF5 volume in RAS
    orientation; UserError naming the file and the way out for anything else."""
    path = Path(path)
    if path.is_dir() and kind_of(path) == "stack":
        return SliceStack(path, label)
    if not label and len(channel_files(path, case_id(path))) > 1:
        raise UserError(f"{path}: a case stored one file per channel is read whole, not slab by slab; store its "
                        "channels in one 4D NIfTI, or raise data.lazy_voxels above its voxel count to read it whole")
    return VolumeSlabs(path, d.h5_label_key if label else d.h5_image_key, spacing_or_default(d.default_spacing))
