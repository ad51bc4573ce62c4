"""Reading images with their geometry (writing them back: ``pipeline.data.writers``).

``load_image`` reads every supported source and returns the voxel array and a
4x4 voxel-to-RAS affine (mm):

- NIfTI ``.nii``/``.nii.gz`` (nibabel), MHA/MHD/NRRD (SimpleITK);
- a DICOM series folder (SimpleITK; a missing slice or uneven spacing is an error);
- HDF5 ``.h5``/``.hdf5``, one dataset per key, spacing from a ``spacing`` attribute;
- a folder of 2D ``.tif``/``.png`` slices forming one volume, in natural order;
- a 2D ``.png``/``.jpg``/``.tif``/``.gif`` image as a single-slice volume.

Arrays are in the file's voxel order (x, y, z) as nibabel gives them (SimpleITK
arrays are transposed to match; for 2D images x is the row); channels, when
there are several, come last.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import tifffile
from PIL import Image

from ..errors import UserError
from .channel_files import channel_files, stack_channels
from .formats import MAX_VOXELS, itk_to_array, read_dicom, read_h5
from .grids import spacing_from_affine
from .label_maps import grey_label, is_binary_mask, slice_plane, values_present

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
H5_SUFFIXES = (".h5", ".hdf5")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
ALL_SUFFIXES = VOLUME_SUFFIXES + H5_SUFFIXES + IMAGE_2D_SUFFIXES
MAX_GZIP_RATIO = 1100  # deflate cannot compress more than ~1032:1; a header claiming more is lying


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
    for suffix in ALL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_file(path: str | Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def natural_key(path: str | Path) -> list:
    """Sort key that puts ``2.png`` before ``10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", Path(path).name)]


def list_images(folder: Path, suffixes: tuple[str, ...] = ALL_SUFFIXES) -> list[Path]:
    """Files of ``folder`` whose names end with one of ``suffixes``, in natural order."""
    return sorted((p for p in folder.iterdir() if p.name.lower().endswith(suffixes)), key=natural_key)


def reader_options(data, label: bool = False) -> dict:
    """``load_image`` keywords for an image (or, with ``label``, a label) of a dataset
    configured by ``data`` (a ``DataConfig``): HDF5 key, colour channel, default spacing, DICOM series."""
    if label:
        return {"h5_key": data.h5_label_key, "spacing": data.default_spacing, "label": True}
    return {"h5_key": data.h5_image_key, "channel": data.channel, "spacing": data.default_spacing,
            "dicom_series": data.dicom_series}


def kind_of(path: str | Path) -> str:
    """``nifti``, ``itk``, ``h5``, ``image2d``, ``dicom`` or ``stack`` (a folder of 2D slices)."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        if any(p.name.lower().endswith(IMAGE_2D_SUFFIXES) for p in files):
            return "stack"
        if any(p.suffix.lower() in (".dcm", "") for p in files):
            return "dicom"
        raise UserError(f"{path}: folder holds no DICOM series and no 2D slices (.tif, .png)")
    for kind, suffixes in (("nifti", NIFTI_SUFFIXES), ("itk", ITK_SUFFIXES), ("h5", H5_SUFFIXES),
                           ("image2d", IMAGE_2D_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    raise UserError(f"{path}: unsupported file type; use one of {', '.join(ALL_SUFFIXES)}, a DICOM folder or a "
                    "slice folder")


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


def read_volume(path: str | Path, **options) -> tuple[np.ndarray, tuple[float, ...]]:
    """Voxel array and spacing (mm) of any supported source (see ``load_image``)."""
    array, affine = load_image(path, **options)
    return array, spacing_from_affine(affine)


def load_image(
    path: str | Path,
    h5_key: str = "image",
    channel: int | None = None,
    spacing: tuple[float, ...] | None = None,
    label: bool = False,
    dicom_series: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of a file or folder: array (x, y, z) or (x, y, z, C); affine 4x4 voxel -> RAS mm.

    ``h5_key`` names the HDF5 dataset, ``channel`` picks one channel of a colour
    image (1 = green), ``spacing`` (mm) is used where the source carries none
    (HDF5 without a ``spacing`` attribute, slices, 2D images; default 1 mm).
    ``label`` turns 0/255 masks into 0/1. ``dicom_series`` picks the series of a DICOM folder that holds
    several (``formats.pick_series``). Raises UserError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (0 bytes)")
    files = [path] if label else channel_files(path, case_id(path))
    try:
        if len(files) > 1:
            options = (h5_key, spacing_or_default(spacing), False, dicom_series)
            array, affine = stack_channels(files, lambda file: _read_source(file, kind_of(file), *options))
        else:
            array, affine = _read_source(path, kind_of(path), h5_key, spacing_or_default(spacing), label,
                                         dicom_series)
    except UserError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError, KeyError, zlib.error, Image.DecompressionBombError,
            nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as err:
        raise UserError(f"{path}: cannot read image data ({_first_line(err)})") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim not in (3, 4):
        raise UserError(f"{path}: expected a 2D or 3D image (optionally with channels), got shape {array.shape}")
    if array.ndim == 4 and channel is not None:
        if not 0 <= channel < array.shape[3]:
            raise UserError(f"{path}: data.channel {channel} does not exist (the image has {array.shape[3]} channels)")
        array = array[..., channel]
    if label:
        array = grey_label(array, path)
        if array.dtype == np.uint8 and is_binary_mask(values_present(array), array.dtype):
            array = (array > 0).astype(np.uint8)
    return array, np.asarray(affine, dtype=np.float64)


def _read_source(path: Path, kind: str, h5_key: str, default_spacing, label: bool,
                 dicom_series: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    if kind == "nifti":
        return _read_nifti(path)
    if kind == "itk":
        return _read_itk(path)
    if kind == "dicom":
        return read_dicom(path, dicom_series)
    if kind == "h5":
        return read_h5(path, h5_key, default_spacing)
    array = _read_stack(path, label) if kind == "stack" else _read_image2d(path)
    return array, np.diag([*default_spacing, 1.0])


def _read_image2d(path: Path) -> np.ndarray:
    """A 2D image file, or a multi-page TIFF as a (rows, cols, pages) volume (EM stacks are often
    stored so); a multi-frame image of another kind is refused rather than read as its first frame."""
    with Image.open(path) as image:
        pages = getattr(image, "n_frames", 1)
    if pages == 1:
        return read_slice(path)
    if not path.name.lower().endswith((".tif", ".tiff")):
        raise UserError(f"{path}: holds {pages} frames; store a volume as a multi-page TIFF, a slice folder or NIfTI")
    array = tifffile.imread(path)  # (pages, rows, cols[, C])
    if array.ndim != 3 or array.shape[0] != pages:
        raise UserError(f"{path}: a multi-page TIFF of {pages} pages read as shape {array.shape}; expected one "
                        "grey-value page per slice")
    return np.moveaxis(array, 0, -1)


def spacing_or_default(spacing) -> tuple[float, float, float]:
    """The voxel size (mm) of sources that carry none: ``data.default_spacing``, else 1 mm (the one rule)."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or any(v <= 0 for v in values):
        raise UserError(f"data.default_spacing must be three positive numbers (mm), got {spacing}")
    return values


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    if int(np.prod(image.shape, dtype=np.int64)) > MAX_VOXELS:
        raise UserError(f"{path}: header declares {image.shape} voxels, more than this tool accepts")
    check_nifti_size(path, image)
    return np.asanyarray(image.dataobj), image.affine


def check_nifti_size(path: Path, image: nib.Nifti1Image) -> None:
    """Refuse a NIfTI whose header declares more data than the file can hold (corrupt or truncated)."""
    shape = image.shape
    n_bytes = int(np.prod(shape, dtype=np.int64)) * image.get_data_dtype().itemsize
    size = path.stat().st_size
    if str(path).lower().endswith(".gz") and n_bytes > MAX_GZIP_RATIO * size:
        raise UserError(f"{path}: header declares {shape} voxels ({n_bytes:,} bytes) but the file has only "
                        f"{size:,} bytes; the file is corrupt")
    if not str(path).lower().endswith(".gz") and n_bytes + int(image.dataobj.offset) > size:
        raise UserError(f"{path}: file is truncated ({size:,} bytes, header needs {n_bytes:,})")


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    geometry = read_geometry(path)
    if int(np.prod(geometry.shape, dtype=np.int64)) > MAX_VOXELS:
        raise UserError(f"{path}: header declares {geometry.shape} voxels, more than this tool accepts")
    return itk_to_array(sitk.ReadImage(str(path)))


def read_slice(path: Path) -> np.ndarray:
    """One 2D image file: (rows, cols), or (rows, cols, 1, C) for colour."""
    with Image.open(path) as image:
        if image.mode in ("P", "1", "LA"):
            image = image.convert("L")
        elif image.mode in ("RGBA", "CMYK", "YCbCr"):
            image = image.convert("RGB")
        array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array[:, :, None, :] if array.ndim == 3 else array  # (rows, cols) or (rows, cols, 1, C)


def _read_stack(folder: Path, label: bool) -> np.ndarray:
    """2D slices of a folder stacked in natural order along the last axis: (rows, cols, slices)."""
    files = list_images(folder, IMAGE_2D_SUFFIXES)
    slices = []
    for file in files:
        try:
            data = read_slice(file)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"{file}: cannot read slice ({_first_line(err)})") from None
        data = slice_plane(data, file, label)
        if slices and data.shape != slices[0].shape:
            raise UserError(f"{file}: slice shape {data.shape} differs from {files[0].name} {slices[0].shape}")
        slices.append(data)
    return np.stack(slices, axis=-1)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__
