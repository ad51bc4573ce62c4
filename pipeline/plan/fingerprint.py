"""What a dataset holds, read once per case in bounded memory: the facts the planner decides on.

Per case: shape and spacing in RAS axis order (as training sees them after reorientation), channels,
the share of exactly-zero image voxels (an MR background), voxels per class, and a seeded sample of at
most ``SAMPLE`` image values inside the labelled foreground (nnU-Net samples the same way for its CT
percentiles). Cases above ``data.lazy_voxels`` and slice stacks are read slab by slab.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from ..config import DataConfig
from ..data.cases import Case, Dataset
from ..data.grids import spacing_from_affine
from ..data.io import kind_of, load_image, reader_options, spacing_or_default
from ..data.label_maps import class_ids
from ..data.label_maps import is_binary_mask
from ..data.volume_slabs import VolumeSlabs, slab_source, volume_voxels

SAMPLE = 10_000  # foreground intensities kept per case


@dataclass
class CaseFacts:
    shape: tuple[int, int, int]  # voxels, RAS axis order
    spacing: tuple[float, float, float]  # mm, RAS axis order
    channels: int
    zero_share: float  # image voxels exactly 0
    class_voxels: dict[int, int]
    foreground: np.ndarray  # (<= SAMPLE, channels) image values under the label, the same voxels per channel


@dataclass
class Fingerprint:
    modalities: tuple[str, ...]  # dataset.json names, or ("image",)
    cases: list[CaseFacts] = field(default_factory=list)

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases])  # (cases, 3)

    @property
    def shapes(self) -> np.ndarray:
        return np.array([c.shape for c in self.cases])

    @property
    def is_2d(self) -> bool:
        return all(c.shape[2] == 1 for c in self.cases)

    @property
    def foreground(self) -> np.ndarray:
        """The first channel's foreground sample of every case."""
        return self.channel_foreground(0)

    def channel_foreground(self, channel: int) -> np.ndarray:
        """Channel ``channel``'s foreground sample of every case (cases with fewer channels add none)."""
        found = [c.foreground[:, channel] for c in self.cases if c.foreground.shape[1] > channel]
        return np.concatenate(found) if found else np.zeros(0)

    def class_share(self) -> dict[int, float]:
        """Voxel share of each class over all cases."""
        total: dict[int, int] = {}
        for case in self.cases:
            for k, n in case.class_voxels.items():
                total[k] = total.get(k, 0) + n
        voxels = sum(total.values()) or 1
        return {k: n / voxels for k, n in sorted(total.items())}

    def cases_with(self) -> dict[int, int]:
        """How many cases contain each class."""
        found: dict[int, int] = {}
        for case in self.cases:
            for k, n in case.class_voxels.items():
                found[k] = found.get(k, 0) + (n > 0)
        return dict(sorted(found.items()))


def fingerprint(dataset: Dataset, data: DataConfig, seed: int = 0) -> Fingerprint:
    """The facts of every labelled training case of ``dataset`` (read with ``data``'s reader options)."""
    rng = np.random.default_rng(seed)
    found = Fingerprint(dataset.modalities)
    for case in (c for c in dataset.training if c.label is not None):
        found.cases.append(_case_facts(case, data, rng))
    return found


def _case_facts(case: Case, data: DataConfig, rng: np.random.Generator) -> CaseFacts:
    if kind_of(case.image) == "stack" or (volume_voxels(case.image, data.h5_image_key) or 0) > data.lazy_voxels:
        return _streamed_facts(case, data, rng)
    image, affine = load_image(case.image, **reader_options(data))
    label, _ = load_image(case.label, **reader_options(data, label=True))
    label = class_ids(label, case.label)
    channels = image.shape[3] if image.ndim == 4 else 1
    first = image[..., 0] if image.ndim == 4 else image
    order = nib.io_orientation(affine)[:, 0].astype(int)  # array axis -> RAS axis
    shape, spacing = np.zeros(3, int), np.zeros(3)
    shape[order], spacing[order] = first.shape[:3], spacing_from_affine(affine)
    values, counts = np.unique(label, return_counts=True)
    return CaseFacts(tuple(int(s) for s in shape), tuple(float(s) for s in spacing), channels,
                     float(np.mean(first == 0)), {int(v): int(n) for v, n in zip(values, counts)},
                     ForegroundSample(rng).add(image[label > 0]).values())


def _streamed_facts(case: Case, data: DataConfig, rng: np.random.Generator) -> CaseFacts:
    """``_case_facts`` one slab at a time: memory holds a slab and the samples, not the case."""
    image, label = slab_source(case.image, data), slab_source(case.label, data, label=True)
    zeros, classes, sample, dtype = 0, {}, ForegroundSample(rng), None
    for (_, slab), (_, ref) in zip(image.slabs(), label.slabs()):
        dtype = ref.dtype
        zeros += int(np.count_nonzero(slab == 0))
        values, counts = np.unique(ref, return_counts=True)
        for v, n in zip(values.tolist(), counts.tolist()):
            classes[int(v)] = classes.get(int(v), 0) + n
        sample.add(slab[ref > 0])
    if is_binary_mask(classes, dtype):  # a 0/255 mask, counted as the readers count it
        classes = {0: classes.get(0, 0), 1: classes[255]}
    spacing = image.spacing if isinstance(image, VolumeSlabs) else spacing_or_default(data.default_spacing)
    return CaseFacts(tuple(image.shape), tuple(float(s) for s in spacing), 1,
                     zeros / float(np.prod(image.shape)), classes, sample.values())


class ForegroundSample:
    """A uniform sample of at most ``SAMPLE`` values, without replacement, of values added part by part
    (slab by slab): each value draws a random key and the ``SAMPLE`` smallest keys are kept, so a part
    weighs by its number of values, whatever the parts' sizes. Memory: one part and the sample."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.keys, self.kept = rng, np.zeros(0), np.zeros((0, 1))

    def add(self, values: np.ndarray) -> ForegroundSample:
        values = values.astype(np.float64, copy=False)
        values = values[:, None] if values.ndim == 1 else values
        keys = np.concatenate([self.keys, self.rng.random(len(values))])
        kept = np.concatenate([self.kept.reshape(-1, values.shape[1]), values]) if len(self.kept) else values
        if len(keys) > SAMPLE:
            smallest = np.argpartition(keys, SAMPLE - 1)[:SAMPLE]
            keys, kept = keys[smallest], kept[smallest]
        self.keys, self.kept = keys, kept
        return self

    def values(self) -> np.ndarray:
        """The sample as (rows, channels)."""
        return self.kept


def describe(found: Fingerprint) -> Iterator[str]:
    """The fingerprint as lines for the terminal."""
    spacings, shapes = found.spacings, found.shapes
    yield f"cases: {len(found.cases)} labelled; channels: {', '.join(found.modalities)}"
    if not found.cases:
        return
    yield f"spacing (mm), median: {' x '.join(f'{v:.3g}' for v in np.median(spacings, axis=0))}; " \
          f"range {' x '.join(f'{a:.3g}-{b:.3g}' for a, b in zip(spacings.min(0), spacings.max(0)))}"
    median = np.median(spacings, axis=0)
    yield f"anisotropy (coarsest / finest median spacing): {median.max() / median.min():.2f}"
    yield f"shape (voxels), median: {' x '.join(str(int(v)) for v in np.median(shapes, axis=0))}" \
          + (" (single-slice: 2D)" if found.is_2d else "") \
          + f"; on the median spacing: {' x '.join(str(int(v)) for v in np.median(shapes * spacings / median, axis=0))}"
    fg = found.foreground
    if fg.size:
        p = np.percentile(fg, [0.5, 50, 99.5])
        yield f"foreground intensity: 0.5 % {p[0]:.4g}, median {p[1]:.4g}, 99.5 % {p[2]:.4g} " \
              f"(mean {fg.mean():.4g}, std {fg.std():.4g})"
    yield f"image voxels exactly 0: {np.mean([c.zero_share for c in found.cases]):.1%} (mean over cases)"
    with_class = found.cases_with()
    yield "classes: " + ", ".join(f"{k}: {share:.2%} of voxels, in {with_class.get(k, 0)} cases"
                                  for k, share in found.class_share().items())
