"""Lazy volumes: a large case converted once into a chunked on-disk store that training reads by window.

A slice stack of a whole kidney (2.7 G voxels), or a NIfTI / HDF5 volume of that
size, cannot be loaded, cropped and normalised in memory for every run. Instead
each large case is converted once, slab by slab (``SliceStack``, ``VolumeSlabs``:
in the RAS orientation the in-memory path uses), into a Zarr store (the chunked format of HiP-CT and OME-Zarr) under
``data.store_dir``:

- ``image.zarr``: intensities already normalised as ``data.modality`` says, float16;
- ``label.zarr``: class ids, uint8 (0/255 masks stored as 0/1);
- ``blocks.npy``: foreground voxels per chunk-sized block, the crop sampler's index;
- ``meta.json``: shape, spacing, and the key it was built for, written last.

The folder name carries a key over the source files (names, sizes, modification
times) and the preprocessing settings, so a store is reused by every later run
and rebuilt only when the data or the settings change. Reading a training patch
touches only the chunks it overlaps.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from ..config import Config, DataConfig
from ..errors import UserError
from .cases import Case
from .grids import check_same_grid
from .io import spacing_or_default
from .stack import SLAB, normalised_reader, stack_statistics
from .volume_slabs import SlabSource, VolumeSlabs, slab_source, volume_voxels

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the store's content changes meaning
CHUNK = (64, 64, SLAB)  # voxels per chunk, (rows, cols, slices); slabs are written chunk-aligned


@dataclass(frozen=True)
class VolumeStore:
    """An opened store: (H, W, D) arrays read by window, and the foreground index."""

    folder: Path
    image: zarr.Array  # (H, W, D) float16, normalised
    label: zarr.Array  # (H, W, D) uint8
    foreground: np.ndarray  # (H/64, W/64, D/16) rounded up: foreground voxels per block, int64
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)

    def block_voxels(self) -> np.ndarray:
        """Voxels per block (blocks on the far edges are smaller), shaped like ``foreground``."""
        sizes = [np.minimum(CHUNK[a], s - np.arange(0, s, CHUNK[a])) for a, s in enumerate(self.shape)]
        return sizes[0][:, None, None] * sizes[1][None, :, None] * sizes[2][None, None, :]

    def window(self, start: tuple[int, int, int], size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Image (float32) and label (uint8) of the box at ``start`` of ``size`` voxels, inside the volume."""
        box = tuple(slice(a, a + n) for a, n in zip(start, size))
        return np.asarray(self.image[box], dtype=np.float32), np.asarray(self.label[box])

    @classmethod
    def open(cls, folder: str | Path) -> VolumeStore:
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        image, label = (zarr.open_array(folder / f"{name}.zarr", mode="r") for name in ("image", "label"))
        return cls(folder, image, label, np.load(folder / "blocks.npy"), tuple(meta["spacing"]))


def lazy_cases(cfg: Config, cases: list[Case]) -> bool:
    """Whether these cases train from stores: ``data.lazy`` always, or auto and a case (slice stack,
    NIfTI or HDF5 volume) has more than ``data.lazy_voxels`` voxels (read from headers)."""
    if cfg.data.lazy == "never":
        return False
    if cfg.data.lazy == "auto" and not any((volume_voxels(c.image, cfg.data.h5_image_key) or 0) > cfg.data.lazy_voxels
                                           for c in cases):
        return False
    for case in cases:  # every case of a lazy run is read slab by slab: refuse the ones that cannot be, naming why
        refuse_unstored_settings(cfg.data, case, slab_source(case.image, cfg.data))
    return True


def refuse_unstored_settings(data: DataConfig, case: Case, image: SlabSource) -> None:
    """A store holds a case's native grid, its first channel and its intensities as read: a setting that
    would change them (``data.spacing`` other than the case's, ``data.channel``, ``data.contrast``) is
    refused before training, not ignored. ``data.crop_foreground`` does not apply: crops are drawn by window."""
    fix = "or set data.lazy=never to read every case whole"
    if data.contrast != "none":
        raise UserError(f"data.contrast={data.contrast}: lazy stores do not apply it (the run trains from stores: "
                        f"{case.image} is large or data.lazy=always); set data.contrast=none, {fix}")
    if data.channel not in (None, 0):
        raise UserError(f"data.channel={data.channel}: lazy stores hold the first channel of {case.image}; "
                        f"set data.channel=0 or null, {fix}")
    native = image.spacing if isinstance(image, VolumeSlabs) else spacing_or_default(data.default_spacing)
    if data.spacing is not None and not np.allclose(native, data.spacing, rtol=1e-3):
        raise UserError(f"{case.image}: spacing {tuple(round(float(s), 4) for s in native)} mm differs from "
                        f"data.spacing {tuple(data.spacing)}, and lazy stores keep each case's native grid; resample "
                        f"the case first, set data.spacing=null to train on the native grids, {fix}")


def store_key(case: Case, cfg: Config) -> str:
    """A hash of what the store's content depends on: the source files and the preprocessing settings."""
    files = [p for source in (case.image, case.label)
             for p in (sorted(Path(source).iterdir()) if Path(source).is_dir() else [Path(source)]) if p.is_file()]
    d = cfg.data
    settings = [FORMAT, d.modality, list(d.channel_modality or ()), list(d.intensity_range), list(d.intensity_target),
                list(d.default_spacing or ()), list(CHUNK), d.h5_image_key, d.h5_label_key]
    sources = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([settings, sources]).encode()).hexdigest()[:16]


def open_store(case: Case, cfg: Config, root: Path) -> VolumeStore:
    """The store of ``case`` under ``root``: reused when its key matches, built (slab by slab) otherwise."""
    folder = root / f"{case.id}-{store_key(case, cfg)}"
    if (folder / "meta.json").is_file():
        log.info("%s: reusing the lazy store %s", case.id, folder)
        return VolumeStore.open(folder)
    others = sorted(p.name for p in root.glob(f"{case.id}-*") if p.is_dir()) if root.is_dir() else []
    reason = (f"its sources or settings differ from those of {', '.join(others)}; delete stores no longer used "
              "to free their space") if others else "first use"
    log.info("%s: building the lazy store %s (%s)", case.id, folder, reason)
    build_store(case, cfg, folder)
    return VolumeStore.open(folder)


def build_store(case: Case, cfg: Config, folder: Path) -> None:
    """Convert a case into a store at ``folder``, one slab at a time, renamed into place when whole."""
    image, label = slab_source(case.image, cfg.data), slab_source(case.label, cfg.data, label=True)
    check_same_grid(image, label)
    folder.parent.mkdir(parents=True, exist_ok=True)
    needed = int(np.prod(image.shape, dtype=np.int64)) * 3  # float16 image and uint8 label
    free = shutil.disk_usage(folder.parent).free
    log.info("%s: the store takes about %.1f GB on disk (%.1f GB free)", case.id, needed / 1e9, free / 1e9)
    if needed * 1.05 > free:
        raise UserError(f"{folder.parent}: the lazy store of {case.id} needs about {needed / 1e9:.1f} GB, only "
                        f"{free / 1e9:.1f} GB free; free space or set data.store_dir to another disk")
    tmp = folder.with_name(f".tmp-{os.getpid()}-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        try:
            _write_arrays(image, label, cfg, tmp)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            raise UserError(f"{folder.parent}: disk full while building the lazy store of {case.id} (the partial "
                            "store was removed); free space or set data.store_dir to another disk") from None
        spacing = list(image.spacing) if isinstance(image, VolumeSlabs) else \
            list(spacing_or_default(cfg.data.default_spacing))
        meta = {"case": case.id, "shape": list(image.shape), "spacing": spacing, "format": FORMAT,
                "image": str(case.image), "label": str(case.label)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same store first: keep its copy
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_arrays(image: SlabSource, label: SlabSource, cfg: Config, out: Path) -> None:
    shape = image.shape
    chunks = tuple(min(c, s) for c, s in zip(CHUNK, shape))
    images = zarr.create_array(out / "image.zarr", shape=shape, chunks=chunks, dtype="float16", compressors=None)
    labels = zarr.create_array(out / "label.zarr", shape=shape, chunks=chunks, dtype="uint8", compressors=None)
    binary = stack_statistics(label, label=True).binary_mask
    read = normalised_reader(image, cfg.data)
    blocks = np.zeros([-(-s // c) for s, c in zip(shape, CHUNK)], dtype=np.int64)
    for z, slab in label.slabs(SLAB):
        stop = z + slab.shape[-1]
        classes = (slab > 0).astype(np.uint8) if binary else slab.astype(np.uint8)
        labels[:, :, z:stop] = classes
        images[:, :, z:stop] = read(z, stop)[0].numpy().astype(np.float16)
        blocks[:, :, z // SLAB] = _block_counts(classes > 0)
    np.save(out / "blocks.npy", blocks)


def _block_counts(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels of a (H, W, n) slab per (64, 64) block of rows and columns."""
    h, w = (-(-s // c) * c for s, c in zip(mask.shape[:2], CHUNK))
    padded = np.zeros((h, w), dtype=np.int64)
    padded[: mask.shape[0], : mask.shape[1]] = mask.sum(axis=-1)
    return padded.reshape(h // CHUNK[0], CHUNK[0], w // CHUNK[1], CHUNK[1]).sum(axis=(1, 3))
