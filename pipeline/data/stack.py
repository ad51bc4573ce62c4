"""Slice stacks read lazily: a folder of 2D slices as a volume that is never loaded whole.

A whole-kidney HiP-CT stack (2279 slices of 1303 x 912) is 2.7 G voxels; reading
it into memory, as ``load_image`` does for small stacks, needs several times that.
``SliceStack`` learns the volume's shape from the slice headers alone and reads
slabs of consecutive slices on demand, so memory depends on the slab, not on the
stack. ``stack_statistics`` streams a stack slab by slab for the dataset check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import UserError
from .io import IMAGE_2D_SUFFIXES, list_images, read_slice
from .label_maps import is_binary_mask, slice_plane
from .normalisation import Normalisation

SLAB = 16  # slices per slab when streaming


class SliceStack:
    """The slices of ``folder`` (natural order) as a (rows, cols, slices) volume read by slab.

    Opening reads each slice's header only and refuses, naming the file, a slice whose
    size differs from the first one's. Colour slices give their first channel; with ``label``, slices
    must hold class ids (colour-coded, NaN or fractional slices are refused when read).
    """

    def __init__(self, folder: str | Path, label: bool = False):
        self.folder, self.label = Path(folder), label
        self.path = self.folder  # what every slab source is named by in messages
        self.files = list_images(self.folder, IMAGE_2D_SUFFIXES)
        if not self.files:
            raise UserError(f"{self.folder}: no slices ({', '.join(IMAGE_2D_SUFFIXES)})")
        sizes = [_header_size(f) for f in self.files]
        for file, size in zip(self.files, sizes):
            if size != sizes[0]:
                raise UserError(f"{file}: slice shape {size} differs from {self.files[0].name} {sizes[0]}; "
                                "every slice of a stack must have the same size")
        self.shape = (*sizes[0], len(self.files))

    def slab(self, start: int, stop: int) -> np.ndarray:
        """Slices ``start`` to ``stop`` (exclusive) as a (rows, cols, stop - start) array."""
        slices = [_slice_array(f, self.label) for f in self.files[start:stop]]
        for file, data in zip(self.files[start:stop], slices):
            if data.shape != self.shape[:2]:
                raise UserError(f"{file}: slice shape {data.shape} differs from {self.files[0].name} {self.shape[:2]}")
        return np.stack(slices, axis=-1)

    def slabs(self, thickness: int = SLAB) -> Iterator[tuple[int, np.ndarray]]:
        """(first slice, slab) for consecutive slabs covering the stack."""
        for start in range(0, self.shape[2], thickness):
            yield start, self.slab(start, min(start + thickness, self.shape[2]))


def _header_size(file: Path) -> tuple[int, int]:
    try:
        with Image.open(file) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise UserError(f"{file}: a slice of a stack holds {image.n_frames} pages; "
                                "store one slice per file or pass the multi-page file as the image")
            return image.size[1], image.size[0]  # (rows, cols)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{file}: cannot read slice header ({' '.join(str(err).split())[:200]})") from None


def _slice_array(file: Path, label: bool) -> np.ndarray:
    try:
        data = read_slice(file)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{file}: cannot read slice ({' '.join(str(err).split())[:200]})") from None
    return slice_plane(data, file, label)


def normalised_reader(stack: SliceStack, d: DataConfig) -> Callable[[int, int], torch.Tensor]:
    """``read(z0, z1)`` -> the network input (1, H, W, z1 - z0) of those slices, normalised by the one
    rule (``Normalisation``) with the whole stack's moments from one streamed pass first (the in-memory
    path takes the same moments; it also crops to the foreground, which the slab path does not)."""
    normalisation = Normalisation.from_config(d)
    moments = normalisation.slab_statistics((slab[None] for _, slab in stack.slabs()), 1) \
        if normalisation.of_channel(0) != "CT" else ((0.0, 1.0),)

    def read(start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(normalisation.run(stack.slab(start, stop)[None], moments))

    return read


@dataclass
class StackStatistics:
    """What the dataset check needs of a stack, gathered one slab at a time."""

    shape: tuple[int, int, int]
    nonfinite: int = 0
    low: float = np.inf  # over the finite voxels
    high: float = -np.inf
    counts: dict[int, int] = field(default_factory=dict)  # voxels per value (labels)
    binary_mask: bool = False  # a 0/255 mask, counted as 0/1

    @property
    def intensity(self) -> tuple[float, float]:
        return (self.low, self.high) if self.low <= self.high else (0.0, 0.0)


def stack_statistics(stack: SliceStack, label: bool = False, thickness: int = SLAB) -> StackStatistics:
    """Shape, non-finite voxels and range of ``stack``; with ``label`` the voxels per value, with
    0/255 masks counted as 0/1 exactly as ``load_image(label=True)`` maps the whole stack."""
    stats, dtype = StackStatistics(stack.shape), None
    for _, slab in stack.slabs(thickness):
        dtype = slab.dtype
        if label:
            values, n = np.unique(slab, return_counts=True)
            for v, c in zip(values.tolist(), n.tolist()):
                stats.counts[v] = stats.counts.get(v, 0) + c
            continue
        finite = np.isfinite(slab)
        stats.nonfinite += int(slab.size - np.count_nonzero(finite))
        if finite.any():
            stats.low = min(stats.low, float(slab[finite].min()))
            stats.high = max(stats.high, float(slab[finite].max()))
    if label and is_binary_mask(stats.counts, dtype):
        stats.counts, stats.binary_mask = {0: stats.counts.get(0, 0), 1: stats.counts[255]}, True
    return stats
