"""Check a dataset before training: every problem with its file and a hint.

    python -m pipeline.check --data PATH
    python -m pipeline.check --config configs/drive.yaml   # with the config's layout options

Each case is read once: image, label and field-of-view mask must share one grid;
images must be finite and not constant; label values must be in the label map.
Exits 1 when any problem is an error. ``train.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..config import DataConfig, load_config
from ..errors import UserError, exit_on_user_error
from .grids import check_same_grid, grid_difference, spacing_from_affine
from .io import kind_of, load_image, reader_options, spacing_or_default
from .cases import Case, Dataset
from .check_report import format_report
from .layouts import load_dataset
from .stack import stack_statistics
from .volume_slabs import VolumeSlabs, slab_source, volume_voxels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    file: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.file}: {self.message}" + (f" ({self.hint})" if self.hint else "")


@dataclass
class CaseStats:
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    channels: int
    intensity: tuple[float, float]
    label_counts: dict[int, int]


@dataclass
class CheckReport:
    dataset: Dataset
    problems: list[Problem] = field(default_factory=list)
    stats: dict[str, CaseStats] = field(default_factory=dict)
    dicom_series: str | None = None  # data.dicom_series: which series of a DICOM folder is the case

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _read(path, options: dict, hint: str) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
    """(array, affine, []) or (None, None, [the problem naming the file])."""
    try:
        array, affine = load_image(path, **options)
    except UserError as err:
        return None, None, [Problem("error", str(path), str(err).split(": ", 1)[-1], hint)]
    return array, affine, []


def _intensity_problems(case: Case, nonfinite: int, low: float, high: float) -> list[Problem]:
    """Non-finite voxels and a constant image, from counts however they were gathered."""
    problems = []
    if nonfinite:
        problems.append(Problem("error", str(case.image), f"{nonfinite} NaN or Inf voxels", "replace them first"))
    if low >= high:
        problems.append(Problem("error", str(case.image), f"image is constant ({low if low == high else 0.0})",
                                "an empty export?"))
    return problems


def _image_problems(case: Case, image: np.ndarray) -> tuple[list[Problem], tuple[float, float]]:
    """Non-numeric, non-finite or constant voxels; and the (low, high) intensity range."""
    if not np.issubdtype(image.dtype, np.number):
        return [Problem("error", str(case.image), f"voxel type {image.dtype} is not numeric")], (0.0, 0.0)
    finite = np.isfinite(image)
    low, high = (float(np.nanmin(image[finite])), float(np.nanmax(image[finite]))) if finite.any() else (0.0, 0.0)
    return _intensity_problems(case, int(image.size - np.count_nonzero(finite)), low, high), (low, high)


def _missing_label(case: Case) -> Problem:
    return Problem("error", str(case.image), "image has no label file",
                   "add the label next to the others or list the pair explicitly")


def _grid_problems(case: Case, path, shape, affine, other_shape, other_affine) -> list[Problem]:
    """A label or mask (``path``) must lie on the image's grid: same shape, spacing and axis directions."""
    difference = grid_difference(shape, affine, other_shape, other_affine)
    if difference is not None:
        hint = "resample it onto the grid of {} (nearest neighbour) first" if "shape" not in difference else \
            "it must be on the grid of {}"
        return [Problem("error", str(path), difference, hint.format(case.image.name))]
    if not np.allclose(affine, other_affine, atol=1e-2):
        return [Problem("warning", str(path), "origin differs from the image's")]
    return []


def _label_problems(case: Case, counts: dict[int, int], dataset: Dataset) -> list[Problem]:
    """Values outside the label map, an all-background label, from the voxel count per value."""
    unknown = [int(v) for v in sorted(counts) if v not in dataset.labels]
    if unknown:
        return [Problem("error", str(case.label), f"label values {unknown[:5]} not in the label map "
                        f"{sorted(dataset.labels)}", "fix the labels or data.labels")]
    if set(counts) == {0}:
        return [Problem("warning", str(case.label), "label is all background",
                        "the case is sampled with background crops only")]
    return []


def _from_error(err: UserError) -> Problem:
    """A UserError ("<file>: <what>") as an error problem naming its file."""
    file, _, message = str(err).partition(": ")
    return Problem("error", file, message)


def check_stack_case(case: Case, dataset: Dataset, data: DataConfig,
                     need_label: bool) -> tuple[list[Problem], CaseStats | None]:
    """``check_case`` for a slice stack or a large NIfTI / HDF5 / MetaImage volume, in bounded memory:
    headers first, then one slab at a time."""
    try:
        source = slab_source(case.image, data)
        image = stack_statistics(source)
    except UserError as err:
        return [_from_error(err)], None
    problems, counts = _intensity_problems(case, image.nonfinite, *image.intensity), {}
    if case.label is None and need_label:
        problems.append(_missing_label(case))
    elif case.label is not None:
        try:
            label_source = slab_source(case.label, data, label=True)
            check_same_grid(source, label_source)
            label = stack_statistics(label_source, label=True)
        except UserError as err:
            problems.append(_from_error(err))
        else:
            counts = label.counts
            problems += _label_problems(case, counts, dataset)
    spacing = source.spacing if isinstance(source, VolumeSlabs) else \
        spacing_or_default(data.default_spacing)
    return problems, CaseStats(image.shape, spacing, 1, image.intensity, counts)


def _read_by_slab(case: Case, data: DataConfig) -> bool:
    """Slice stacks always; volumes above ``data.lazy_voxels`` voxels that ``slab_source`` can read."""
    if case.image.is_dir():
        return kind_of(case.image) == "stack"
    if (volume_voxels(case.image, data.h5_image_key) or 0) <= data.lazy_voxels:
        return False
    try:
        slab_source(case.image, data)
    except UserError:  # e.g. permuted axes: read whole, as before
        return False
    return True


def check_case(case: Case, dataset: Dataset, data: DataConfig,
               need_label: bool) -> tuple[list[Problem], CaseStats | None]:
    """Every problem of one case, and its statistics (None when the image cannot be read).
    Slice stacks and large volumes are streamed (``check_stack_case``); other cases are read whole."""
    if _read_by_slab(case, data):
        return check_stack_case(case, dataset, data, need_label)
    image, affine, problems = _read(case.image, reader_options(data), "re-export or remove the case")
    if image is None:
        return problems, None
    found, intensity = _image_problems(case, image)
    problems += found
    counts: dict[int, int] = {}
    if case.label is None and need_label:
        problems.append(_missing_label(case))
    elif case.label is not None:
        label, label_affine, found = _read(case.label, reader_options(data, label=True), "add it or drop the case")
        problems += found
        if label is not None:
            grid = _grid_problems(case, case.label, label.shape, label_affine, image.shape, affine)
            problems += grid
            if not any(p.severity == "error" for p in grid):
                values, n = np.unique(label, return_counts=True)
                if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
                    bad = next(float(v) for v in values if not np.isfinite(v) or v != np.round(v))
                    problems.append(Problem("error", str(case.label), f"holds {bad:g}, not a class id",
                                            "store class ids 0, 1, 2, ... (threshold or round it first)"))
                else:
                    counts = {int(v): int(c) for v, c in zip(values, n)}
                    problems += _label_problems(case, counts, dataset)
    if case.mask is not None:
        mask, mask_affine, found = _read(case.mask, reader_options(data, label=True), "add the mask or remove the case")
        problems += found
        if mask is not None:
            problems += _grid_problems(case, case.mask, mask.shape, mask_affine, image.shape, affine)
    channels = image.shape[3] if image.ndim == 4 else 1
    return problems, CaseStats(tuple(image.shape[:3]), spacing_from_affine(affine), channels, intensity, counts)


def check_dataset(dataset: Dataset, data: DataConfig | None = None, workers: int = 2) -> CheckReport:
    """Read every case once (threads) and report each problem with its file and a hint."""
    data = data or DataConfig()
    report = CheckReport(dataset, dicom_series=data.dicom_series)
    cases = [(c, True) for c in dataset.training] + [(c, False) for c in dataset.test]
    seen: dict[str, object] = {}
    for case, _ in cases:
        if case.id in seen:
            report.problems.append(Problem("error", str(case.image),
                                           f"case id {case.id!r} also used by {seen[case.id]}",
                                           "give every case a unique file name"))
        seen[case.id] = case.image
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: check_case(item[0], dataset, data, item[1]), cases)
        for (case, _), (problems, stats) in zip(cases, results):
            report.problems.extend(problems)
            if stats is not None:
                report.stats[case.id] = stats
                if data.channel is None and stats.channels != len(dataset.modalities):
                    report.problems.append(Problem(
                        "error", str(case.image), f"has {stats.channels} channel(s), the dataset declares "
                        f"{len(dataset.modalities)} ({', '.join(dataset.modalities)})",
                        "give every case the declared channels, or pick one with data.channel"))
                fed = 1 if data.channel is not None else stats.channels  # what the network gets
                if data.channel_modality and len(data.channel_modality) != fed:
                    report.problems.append(Problem(
                        "error", str(case.image), f"has {fed} channel(s), data.channel_modality names "
                        f"{len(data.channel_modality)}", "give one modality per channel in data.channel_modality"))
    return report


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (default: the config's data.root)")
    parser.add_argument("--config", help="a config whose data options (layout, keys, spacing) to use")
    args = parser.parse_args(argv)
    if args.data is None and args.config is None:
        parser.error("give --data PATH or --config PATH")
    data = load_config(args.config).data if args.config else DataConfig()
    root = args.data if args.data is not None else data.root
    report = check_dataset(load_dataset(root, data), data)
    print(format_report(report))
    if report.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()


def checked_dataset(data: DataConfig) -> Dataset:
    """The dataset of ``data.root`` after the dataset check: warnings logged, the first error raised (what
    training and planning start from)."""
    dataset = load_dataset(data.root, data)
    report = check_dataset(dataset, data)
    for problem in (p for p in report.problems if p.severity == "warning"):
        log.warning("%s", problem)
    if report.errors:
        first, more = report.errors[0], len(report.errors) - 1
        more_text = f"; {more} more problem(s): see `python -m pipeline.check --data {data.root}`" if more else ""
        raise UserError(f"{first.file}: {first.message}" + (f" ({first.hint})" if first.hint else "") + more_text)
    if not dataset.training:
        raise UserError(f"{data.root}: no training cases")
    return dataset
