"""Kidney-like slice stacks in the SenNet + HOA layout, written one slice at a time.

    python -m pipeline.synthetic --kind kidney-stack --shape H W D --out DIR [--cases N]

Each case is ``DIR/kidney_<i>/images/0000.tif ...`` (uint8, HiP-CT-like intensities)
and ``DIR/kidney_<i>/labels/0000.tif ...`` (0/255 vessel masks, as SenNet ships
them): a bean-shaped organ with a branching vessel tree that enters at the hilum
and halves its radius over a few generations. The tree is a short list of line
segments, so each slice is drawn from it alone: memory stays at a few slices
whatever the number of slices, and any slice can be redrawn on its own.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KidneySpec:
    shape: tuple[int, int, int] = (256, 256, 128)  # rows, columns, slices
    seed: int = 0
    generations: int = 6  # of vessel branching: 2**generations - 1 segments
    noise: float = 12.0  # grey levels (of 255)


@dataclass(frozen=True)
class Segment:
    """A vessel piece from ``start`` to ``end`` (voxels, (row, column, slice)), radius ``radius``."""

    start: np.ndarray
    end: np.ndarray
    radius: float


def _organ_geometry(spec: KidneySpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and semi-axes (voxels) of the organ ellipsoid, and the hilum point on its medial side."""
    shape = np.asarray(spec.shape, dtype=float)
    centre = (shape - 1) / 2
    axes = shape * np.array([0.30, 0.42, 0.44])
    hilum = centre + np.array([axes[0] * 0.55, 0.0, 0.0])
    return centre, axes, hilum


def vessel_tree(spec: KidneySpec) -> list[Segment]:
    """Segments of a binary tree grown from the hilum into the organ, seeded by ``spec.seed``."""
    rng = np.random.default_rng([spec.seed, 7])
    centre, axes, hilum = _organ_geometry(spec)
    segments: list[Segment] = []
    base_radius = max(1.5, 0.035 * min(spec.shape[:2]))
    grow = [(hilum, (centre - hilum) / np.linalg.norm(centre - hilum), base_radius, 0.45 * axes.min())]
    for _ in range(spec.generations):
        children = []
        for start, direction, radius, length in grow:
            end = start + direction * length
            end = centre + (end - centre) * min(1.0, 0.9 / max(np.sqrt((((end - centre) / axes) ** 2).sum()), 1e-9))
            segments.append(Segment(start, end, radius))
            for sign in (-1.0, 1.0):
                turn = rng.normal(size=3) * 0.5 + sign * np.cross(direction, rng.normal(size=3))
                child = direction + 0.8 * turn / max(np.linalg.norm(turn), 1e-9)
                children.append((end, child / np.linalg.norm(child), max(radius * 0.72, 1.0), length * 0.75))
        grow = children
    return segments


def _segment_mask(segment: Segment, z: int, rows: int, cols: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """(window, mask) of the voxels of slice ``z`` within the segment's radius; None when it misses the slice."""
    p, d, r = segment.start, segment.end - segment.start, segment.radius
    if not min(p[2], p[2] + d[2]) - r <= z <= max(p[2], p[2] + d[2]) + r:
        return None
    low = np.floor(np.minimum(p, p + d)[:2] - r).astype(int).clip(0, [rows, cols])
    high = np.ceil(np.maximum(p, p + d)[:2] + r + 1).astype(int).clip(0, [rows, cols])
    if np.any(high <= low):
        return None
    y, x = np.meshgrid(np.arange(low[0], high[0]), np.arange(low[1], high[1]), indexing="ij", sparse=True)
    q = [y - p[0], x - p[1], z - p[2]]
    t = np.clip((q[0] * d[0] + q[1] * d[1] + q[2] * d[2]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    distance2 = sum((qi - t * di) ** 2 for qi, di in zip(q, d))
    return (slice(low[0], high[0]), slice(low[1], high[1])), distance2 <= r * r


def kidney_slice(spec: KidneySpec, segments: list[Segment], z: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z``: image (rows, cols) uint8 and vessel label (rows, cols) uint8 0/255."""
    rows, cols, _ = spec.shape
    centre, axes, hilum = _organ_geometry(spec)
    y, x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij", sparse=True)
    q = ((y - centre[0]) / axes[0]) ** 2 + ((x - centre[1]) / axes[1]) ** 2 + ((z - centre[2]) / axes[2]) ** 2
    notch = ((y - hilum[0]) / (0.45 * axes[0])) ** 2 + ((x - hilum[1]) / (0.35 * axes[1])) ** 2 \
        + ((z - hilum[2]) / (0.5 * axes[2])) ** 2
    organ = (q < 1) & (notch > 1)  # a bean: the ellipsoid less a notch at the hilum
    vessel = np.zeros((rows, cols), dtype=bool)
    for segment in segments:
        hit = _segment_mask(segment, z, rows, cols)
        if hit is not None:
            vessel[hit[0]] |= hit[1]
    rng = np.random.default_rng([spec.seed, 11, z])
    image = np.where(organ, 110.0 + 15.0 * np.sqrt(np.clip(1 - q, 0, 1)), 30.0)
    image[vessel] = 205.0
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(scale=spec.noise, size=(rows, cols))
    return np.clip(image, 0, 255).astype(np.uint8), np.where(vessel, 255, 0).astype(np.uint8)


def write_kidney_stack(case_dir: str | Path, spec: KidneySpec) -> Path:
    """Write ``case_dir/images/0000.tif ...`` and ``case_dir/labels/...``, one slice at a time."""
    case_dir = Path(case_dir)
    for sub in ("images", "labels"):
        (case_dir / sub).mkdir(parents=True, exist_ok=True)
    segments = vessel_tree(spec)
    digits = max(4, len(str(spec.shape[2] - 1)))
    for z in range(spec.shape[2]):
        image, label = kidney_slice(spec, segments, z)
        Image.fromarray(image).save(case_dir / "images" / f"{z:0{digits}d}.tif")
        Image.fromarray(label).save(case_dir / "labels" / f"{z:0{digits}d}.tif")
        if z % 100 == 0:
            log.info("%s: slice %d/%d", case_dir.name, z + 1, spec.shape[2])
    return case_dir


def generate_kidney_stacks(out: str | Path, spec: KidneySpec = KidneySpec(), cases: int = 1) -> Path:
    """Write ``cases`` stacks ``out/kidney_1 ...`` (case ``i`` seeded ``spec.seed + i``) into a new or
    empty folder, after checking that the disk has room for them (uncompressed uint8 TIFF)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: folder exists and is not empty; choose another --out")
    needed = 2 * int(np.prod(spec.shape, dtype=np.int64)) * cases + 2 * 4096 * spec.shape[2] * cases
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < needed:
        raise UserError(f"{out}: the stacks need about {needed / 2**30:.1f} GB, only {free / 2**30:.1f} GB free; "
                        "choose another --out or a smaller --shape")
    log.info("writing %d kidney stack(s) of %s voxels, about %.2f GB", cases, spec.shape, needed / 2**30)
    for i in range(cases):
        write_kidney_stack(out / f"kidney_{i + 1}", KidneySpec(spec.shape, spec.seed + i, spec.generations, spec.noise))
    return out
