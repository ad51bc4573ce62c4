"""Multi-modal images stored one file per channel, as nnU-Net names them: ``case_0000.nii.gz`` (say T2),
``case_0001.nii.gz`` (say ADC), ... The channel-0 file stands for the case everywhere (its id drops
the suffix, its grid is the case's grid); ``load_image`` reads its siblings with it and stacks them
as channels, refusing a channel that is not on channel 0's voxel grid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError
from .grids import grid_difference, origin_difference

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})$")


def split_channel(stem: str) -> tuple[str, int | None]:
    """``case_0001`` -> (``case``, 1); a name without a 4-digit channel suffix -> (name, None)."""
    match = _CHANNEL.match(stem)
    return (match["case"], int(match["index"])) if match else (stem, None)


def channel_files(path: Path, stem: str) -> list[Path]:
    """``path`` and the files of its other channels, in channel order, when ``path`` (whose name without
    its image suffix is ``stem``) is channel 0000 and a channel 0001 sits next to it; else ``[path]``."""
    case, index = split_channel(stem)
    if index != 0 or not path.is_file():
        return [path]
    suffix = path.name[len(stem):]
    files = [path]
    while (sibling := path.with_name(f"{case}_{len(files):04d}{suffix}")).is_file():
        files.append(sibling)
    return files


def stack_channels(files: Sequence[Path], read: Callable[[Path], tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z, C) array and channel 0's affine of the channel ``files``, each read with ``read``; UserError
    naming the file when one holds more than one grey-value image or lies on another grid."""
    arrays: list[np.ndarray] = []
    affines: list[np.ndarray] = []
    for file in files:
        array, affine = read(file)
        array = array[:, :, None] if array.ndim == 2 else array
        if array.ndim != 3:
            raise UserError(f"{file}: a channel file holds one grey-value image, got shape {array.shape}")
        if arrays and (difference := grid_difference(array.shape, affine, arrays[0].shape, affines[0])
                       or origin_difference(affine, affines[0])):
            raise UserError(f"{file}: not on the grid of channel 0, {files[0].name} ({difference}); resample "
                            "every channel of a case onto one grid")
        arrays.append(array)
        affines.append(np.asarray(affine, dtype=np.float64))
    return np.stack(arrays, axis=-1), affines[0]
