"""A MONAI ``ImageReader`` over ``pipeline.io.load_image``, so every supported
format (NIfTI, MHA/NRRD, DICOM series, HDF5, slice stacks, 2D images) enters
the MONAI transforms as a MetaTensor with its affine, and ``Invertd`` can put
predictions back on the source grid."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from monai.data import ImageReader, MetaTensor
from monai.transforms import LoadImage

from ..errors import UserError
from .io import kind_of, load_image


@contextlib.contextmanager
def quiet_default_readers() -> Iterator[None]:
    """Around making a ``LoadImage``: MONAI also makes its default readers, and with pydicom installed it
    warns that a GPU DICOM decoder is missing. Our reader reads DICOM (SimpleITK)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        yield


class PipelineReader(ImageReader):
    """Reads one path with ``load_image``; channels (if any) are reported as the last dimension."""

    def __init__(self, h5_key: str = "image", channel: int | None = None,
                 spacing: Sequence[float] | None = None, label: bool = False, dicom_series: str | None = None):
        super().__init__()
        self.options = {"h5_key": h5_key, "channel": channel, "spacing": spacing, "label": label,
                        "dicom_series": dicom_series}

    def verify_suffix(self, filename) -> bool:
        try:
            kind_of(_single(filename))
        except (UserError, ValueError, OSError):
            return False
        return True

    def read(self, data, **kwargs):
        return load_image(_single(data), **self.options)

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        array, affine = img
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(array.shape[:3]),
            "original_channel_dim": -1 if array.ndim == 4 else float("nan"),
            "space": "RAS",
        }
        return array, meta


class _Preloaded(PipelineReader):
    """A reader that hands over an array already read with ``load_image``."""

    def __init__(self, array: np.ndarray, affine: np.ndarray):
        super().__init__()
        self.loaded = (array, affine)

    def verify_suffix(self, filename) -> bool:
        return True

    def read(self, data, **kwargs):
        return self.loaded


def to_meta_tensor(array: np.ndarray, affine: np.ndarray, path) -> MetaTensor:
    """The (C, H, W, D) float32 MetaTensor that ``LoadImaged(reader=PipelineReader(...))`` makes of the
    file at ``path``, from its array and affine already read: the file is read once, not twice."""
    with quiet_default_readers():
        load = LoadImage(reader=_Preloaded(array, affine), image_only=True, ensure_channel_first=True)
    return load(str(path))


def _single(filename):
    """MONAI passes file names as a tuple; this reader reads exactly one source."""
    if isinstance(filename, (list, tuple)):
        if len(filename) != 1:
            raise ValueError(f"one file or folder per image, got {len(filename)}")
        return filename[0]
    return filename
