"""Predicting a slice stack larger than memory: read, normalise, predict and write slab by slab.

The stack is never loaded whole: ``SliceStack`` reads the slices a window batch
needs, intensities are normalised slab by slab (CT: the configured window, a
per-voxel map; MR / generic: a z-score whose mean and standard deviation come from
one streamed pass first), ``stream_logits`` blends the windows, and each finished
slab's label map is written as one uint8 TIFF per slice (``0000.tif ...``, class
ids), named like the input's slices. Slice stacks carry no orientation (their
affine is diagonal), so the only preprocessing step of the in-memory path that
does not apply is the foreground crop: the whole stack is predicted.
"""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config import Config
from ..data.stack import SliceStack, normalised_reader
from ..data.volume_slabs import SlabSource, VolumeSlabs, slab_source, volume_voxels
from ..data.writers import write_label_planes
from ..errors import UserError
from ..files import atomic_write
from .predictor import Predictor
from .streamed import stream_logits

log = logging.getLogger(__name__)


def predict_slabs(predictor: Predictor, stack: SlabSource, out: Path, part: tuple[int, int] | None = None,
                  probabilities: Path | None = None) -> Path:
    """Write the label map of ``stack`` (slices ``part=(a, b)`` only, default all) into the folder
    ``out``, one slab at a time; with ``probabilities``, also each foreground class's softmax as
    float32 slices in ``probabilities/class_<id>/``.

    Slices already written are kept and not predicted again: every slice file is written
    atomically, so after a killed run (``--resume``) or on another torchrun rank's share exactly
    the missing runs of slices are predicted, each from the windows that reach it, and the values
    equal those of one uninterrupted pass.
    """
    cfg = predictor.cfg
    folders = [out] + [probabilities / f"class_{k}" for k in sorted(predictor.labels) if k and probabilities]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    a, b = part if part is not None else (0, stack.shape[2])
    names = slice_names(stack)
    missing = [z for z in range(a, b) if not all((folder / names[z]).is_file() for folder in folders)]
    if len(missing) < b - a:
        log.info("%s: %d of %d slices already written, predicting the other %d", out, b - a - len(missing), b - a,
                 len(missing))
    check_free_space(out, len(missing) * _slice_bytes(stack) * (1 + 4 * (len(folders) - 1)))
    read = normalised_reader(stack, cfg.data) if missing else None
    with tqdm(total=len(missing), desc=f"  {out.name}", unit="slice", leave=False) as bar:
        for first, stop in _runs(missing):
            slabs = stream_logits(predictor.engine, read, stack.shape, cfg.train.patch_size, cfg.infer,
                                  max(predictor.labels) + 1, slices=(first, stop))
            for slab in slabs:
                labels = slab.logits.argmax(dim=0).to(torch.uint8).cpu().numpy()  # (H, W, n)
                for k in range(labels.shape[-1]):
                    done = b - a - len(missing) + bar.n
                    if probabilities is not None:  # one slice at a time: (K, H, W) float32
                        prob = torch.softmax(slab.logits[..., k], dim=0).cpu().numpy()
                        for folder, c in zip(folders[1:], (c for c in sorted(predictor.labels) if c)):
                            _write_slice(folder / names[slab.start + k], prob[c], done, b - a)
                    _write_slice(out / names[slab.start + k], labels[..., k], done, b - a)  # last: marks it done
                    bar.update(1)
    return out


def slice_names(stack: SlabSource) -> list[str]:
    """File names of the label slices: the input's slice names as .tif, or 00000.tif ... for a volume."""
    if isinstance(stack, SliceStack):
        return [f.with_suffix(".tif").name for f in stack.files]
    return [f"{z:05d}.tif" for z in range(stack.shape[2])]


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as (start, stop) runs of consecutive values: [1, 2, 3, 7] -> [(1, 4), (7, 8)]."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _slice_bytes(stack: SlabSource) -> int:
    """Disk space of one uint8 label slice (uncompressed TIFF: the pixels plus a header)."""
    return stack.shape[0] * stack.shape[1] + 1024


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse to start writing ``needed`` bytes into ``folder`` when its disk has less free (plus 1 %)."""
    free = shutil.disk_usage(folder).free
    log.info("%s: writing about %.2f GB of predictions, %.1f GB free", folder, needed / 1e9, free / 1e9)
    if needed * 1.01 > free:
        raise UserError(f"{folder}: the predictions need about {needed / 1e9:.2f} GB, only {free / 1e9:.2f} GB free; "
                        "free space or write elsewhere with --out")


def _write_slice(path: Path, plane: np.ndarray, done: int, total: int) -> None:
    """One label slice, atomically; a full disk is a clear error that says how to go on."""
    try:
        atomic_write(path, lambda tmp: Image.fromarray(plane).save(tmp, format="TIFF"))
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise UserError(f"{path}: disk full while writing predictions ({done} of {total} slices written and kept); "
                        "free space and rerun the same command with --resume") from None


def streamed_stack(case_image: Path, cfg: Config) -> SlabSource | None:
    """The slab reader of ``case_image`` when it is to be predicted slab by slab: a slice stack, NIfTI,
    HDF5 or MetaImage volume with more voxels than ``infer.stream_voxels`` and at least one patch along every axis
    (smaller ones are padded by the in-memory path); None otherwise. Reads headers only.

    A volume that cannot be read by slab (permuted axes, NRRD) is read whole, as before, with a warning.
    """
    if (volume_voxels(case_image, cfg.data.h5_image_key) or 0) <= cfg.infer.stream_voxels:
        return None
    try:
        source = slab_source(case_image, cfg.data)
    except UserError as err:
        log.warning("%s; reading it whole", err)
        return None
    return source if all(s >= p for s, p in zip(source.shape, cfg.train.patch_size)) else None


def write_volume_prediction(slices: Path, source: VolumeSlabs, out: Path) -> Path:
    """The label slices of a volume predicted slab by slab (RAS order, ``slice_names``) as ``out``
    (.nii.gz) in the source file's own geometry, streamed: the flips to RAS are undone plane by plane."""
    stack, depth = SliceStack(slices), source.shape[2]

    def planes():
        for z in range(depth):  # stored order
            plane = stack.slab(depth - 1 - z, depth - z)[..., 0] if source.flips[2] else stack.slab(z, z + 1)[..., 0]
            yield np.flip(plane, tuple(a for a in range(2) if source.flips[a]))

    return write_label_planes(planes(), source.shape, source.path, source.affine, out)


def stack_thumbnail(stack: SlabSource, size: int = 256) -> tuple[np.ndarray, int]:
    """The stack subsampled by a whole factor so that no axis exceeds ``size`` voxels, read slab by
    slab (for slice images of volumes too large to hold); returns (array, factor)."""
    factor = max(1, -(-max(stack.shape) // size))
    # copies: a strided view would keep each whole slice alive
    parts = [stack.slab(z, z + 1)[::factor, ::factor].copy() for z in range(0, stack.shape[2], factor)]
    return np.concatenate(parts, axis=-1), factor
