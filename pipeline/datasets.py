"""Cases, splits and the integrity check of a dataset root.

Layouts (``data.layout``, detected when ``auto``):

- ``msd``: ``dataset.json`` with imagesTr/labelsTr/imagesTs (and optionally
  labelsTs); or the same folders without it, paired by file name (nnU-Net's
  ``_0000`` channel suffix accepted);
- ``paired``: ``images/`` + ``labels/`` (or ``1st_manual/``, ``masks/``, ...)
  and optionally ``mask/`` field-of-view masks, paired by name or by leading
  number (DRIVE: ``21_training.tif`` <-> ``21_manual1.gif`` <-> ``21_training_mask.gif``);
- ``h5``: a folder of ``.h5`` files, each holding image and label;
- ``stack``: slice-stack volumes, ``<case>/images/*.tif`` + ``<case>/labels/*.tif``
  (the kidney layout), or ``images/`` + ``labels/`` slice folders forming one volume;
- ``list``: a YAML or CSV list of ``image,label[,mask]`` paths (``data.list``).

Every path must stay inside the root: ``../``, absolute paths and links that
leave it are refused.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import DataConfig, read_yaml
from .errors import UserError
from .io import ALL_SUFFIXES, H5_SUFFIXES, IMAGE_2D_SUFFIXES, case_id, load_image, natural_key, spacing_from_affine

log = logging.getLogger(__name__)

LABEL_DIRS = ("labels", "label", "1st_manual", "manual", "masks", "gt", "groundtruth", "ground_truth")
FOV_DIRS = ("mask", "fov", "roi")


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None = None
    mask: Path | None = None  # field of view


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str
    labels: dict[int, str]
    training: tuple[Case, ...]
    test: tuple[Case, ...] = ()
    modalities: tuple[str, ...] = ("CT",)

    @property
    def n_classes(self) -> int:
        return max(self.labels) + 1

    def case(self, case_id: str) -> Case:
        for case in self.training + self.test:
            if case.id == case_id:
                return case
        raise UserError(f"{self.root}: no case {case_id!r}")


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

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _inside(root: Path, relative: str | Path, source: Path) -> Path:
    """``root / relative`` resolved, refused when it leaves the root (../, absolute, links)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UserError(f"{source}: path {str(relative)!r} points outside the dataset root {root}; "
                        "keep every file inside the dataset folder")
    return path


# --- MSD -------------------------------------------------------------------------------------

def _msd_labels(meta: dict, source: Path) -> dict[int, str]:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: 'labels' must map label ids to names, e.g. {{\"0\": \"background\", \"1\": \"organ\"}}")
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        raise UserError(f"{source}: label ids in 'labels' must be integers, got {list(raw)}") from None
    if 0 not in labels or sorted(labels) != list(range(len(labels))):
        raise UserError(f"{source}: label ids must be 0..N-1 with 0 the background, got {sorted(labels)}")
    return labels


def _load_msd(root: Path) -> tuple[list[Case], list[Case], dict[int, str] | None, tuple[str, ...]]:
    source = root / "dataset.json"
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{source}: cannot parse ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
        raise UserError(f"{source}: expected a 'training' list of {{\"image\": ..., \"label\": ...}} entries")
    training = []
    for entry in meta["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise UserError(f"{source}: training entry {entry!r} needs 'image' and 'label'")
        image = _inside(root, entry["image"], source)
        training.append(Case(case_id(image), image, _inside(root, entry["label"], source)))
    test = []
    for entry in meta.get("test", []):
        rel = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(rel, str):
            raise UserError(f"{source}: test entry {entry!r} must be a path or have an 'image'")
        image = _inside(root, rel, source)
        if isinstance(entry, dict) and "label" in entry:
            label = _inside(root, entry["label"], source)
        else:
            guess = root / "labelsTs" / image.name
            label = guess if guess.is_file() else None
        test.append(Case(case_id(image), image, label))
    modality = meta.get("modality") or meta.get("channel_names") or {"0": "CT"}
    return training, test, _msd_labels(meta, source), tuple(str(v) for _, v in sorted(modality.items()))


def _strip_channel(cid: str) -> str:
    return cid[:-5] if len(cid) > 5 and cid[-5] == "_" and cid[-4:].isdigit() else cid


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.lower().endswith(ALL_SUFFIXES)), key=natural_key)


def _msd_folder_cases(root: Path, images: str, labels: str) -> list[Case]:
    if not (root / images).is_dir():
        return []
    label_files = {case_id(p): p for p in _files(root / labels)} if (root / labels).is_dir() else {}
    return [Case(_strip_channel(case_id(p)), p, label_files.get(_strip_channel(case_id(p)))) for p in _files(root / images)]


# --- paired folders ----------------------------------------------------------------------------

_NUMBER = re.compile(r"^(\d+)")


def _pair_key(path: Path, by: str) -> str | None:
    if by == "name":
        return case_id(path)
    match = _NUMBER.match(path.name)
    return match.group(1) if match else None


def _find_dir(root: Path, configured: str | None, candidates: Sequence[str], what: str) -> Path | None:
    if configured is not None:
        folder = _inside(root, configured, root)
        if not folder.is_dir():
            raise UserError(f"{folder}: {what} folder not found")
        return folder
    return next((root / c for c in candidates if (root / c).is_dir()), None)


def _paired_cases(root: Path, data: DataConfig) -> list[Case]:
    images = _find_dir(root, data.images_dir, ("images", "image", "imgs"), "image")
    if images is None:
        raise UserError(f"{root}: no images/ folder; set data.images_dir")
    labels = _find_dir(root, data.labels_dir, LABEL_DIRS, "label")
    fov = _find_dir(root, data.fov_dir, FOV_DIRS, "field-of-view")
    image_files = _files(images)
    by = data.pair_by
    if by == "auto":
        names = {case_id(p) for p in image_files}
        label_names = {case_id(p) for p in _files(labels)} if labels else names
        by = "name" if names & label_names else "number"
    def index(folder: Path | None) -> dict[str, Path]:
        if folder is None:
            return {}
        found: dict[str, Path] = {}
        for p in _files(folder):
            key = _pair_key(p, by)
            if key is not None:
                if key in found:
                    raise UserError(f"{folder}: {found[key].name} and {p.name} both pair with case {key!r}; "
                                    "set data.pair_by=name")
                found[key] = p
        return found
    label_index, fov_index = index(labels), index(fov)
    cases = []
    for p in image_files:
        key = _pair_key(p, by)
        if key is None:
            raise UserError(f"{p}: file name has no leading number to pair by; set data.pair_by=name")
        cases.append(Case(case_id(p), p, label_index.get(key), fov_index.get(key)))
    if fov is not None:
        missing = [c.image.name for c in cases if c.mask is None]
        if missing:
            raise UserError(f"{fov}: no field-of-view mask for {', '.join(missing[:5])}")
    return cases


# --- HDF5, stacks, lists -------------------------------------------------------------------------

def _h5_cases(root: Path) -> list[Case]:
    return [Case(case_id(p), p, p) for p in sorted(root.iterdir(), key=natural_key) if p.name.lower().endswith(H5_SUFFIXES)]


def _has_slices(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.lower().endswith(IMAGE_2D_SUFFIXES) for p in folder.iterdir())


def _stack_cases(root: Path) -> list[Case]:
    if _has_slices(root / "images"):  # one volume: root/images + root/labels
        label = next((root / d for d in LABEL_DIRS if _has_slices(root / d)), None)
        return [Case(root.name, root / "images", label)]
    cases = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=natural_key):
        if _has_slices(folder / "images"):
            label = next((folder / d for d in LABEL_DIRS if _has_slices(folder / d)), None)
            cases.append(Case(folder.name, folder / "images", label))
    return cases


def _list_cases(root: Path, listing: str) -> list[Case]:
    source = _inside(root, listing, root)
    if source.suffix.lower() == ".csv":
        try:
            with open(source, newline="", encoding="utf-8") as f:
                entries = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise UserError(f"{source}: cannot read CSV ({err})") from None
    else:
        entries = read_yaml(source)
        entries = entries.get("cases") if isinstance(entries, dict) else entries
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source}: expected a list of cases with 'image' and 'label' (and optionally 'mask')")
    cases = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("image"):
            raise UserError(f"{source}: entry {entry!r} needs an 'image'")
        image = _inside(root, entry["image"], source)
        label = _inside(root, entry["label"], source) if entry.get("label") else None
        mask = _inside(root, entry["mask"], source) if entry.get("mask") else None
        cid = str(entry.get("id") or case_id(image))
        if "/" in cid or "\\" in cid or cid in ("", ".", ".."):
            raise UserError(f"{source}: case id {cid!r} is not a plain name; outputs are named after case ids")
        cases.append(Case(cid, image, label, mask))
    return cases


def _detect_layout(root: Path) -> str:
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return "msd"
    if any(p.name.lower().endswith(H5_SUFFIXES) for p in root.iterdir()):
        return "h5"
    if any(_has_slices(p / "images") for p in root.iterdir() if p.is_dir()):
        return "stack"
    if any((root / d).is_dir() for d in ("images", "image", "imgs")):
        return "paired"
    raise UserError(f"{root}: cannot tell the layout (no dataset.json, imagesTr/, .h5 files, <case>/images/ or images/); "
                    "set data.layout")


def _labels_from_data(cases: Sequence[Case], data: DataConfig) -> dict[int, str]:
    """Class ids 0..max found in the label files (names 'label i')."""
    top = 1
    for case in cases:
        if case.label is not None and case.label.exists():
            label, _ = load_image(case.label, h5_key=data.h5_label_key, label=True)
            top = max(top, int(label.max(initial=0)))
    return {0: "background", **{i: f"label {i}" for i in range(1, top + 1)}}


def load_dataset(root: str | Path, data: DataConfig | None = None) -> Dataset:
    """Detect or apply the layout of ``root`` and list its cases; UserError when nothing usable is there."""
    data = data or DataConfig()
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found; run `python -m pipeline.synthetic --out {root}` "
                        "for demo data or set data.root to your dataset")
    layout = data.layout if data.layout != "auto" else ("list" if data.list else _detect_layout(root))
    labels, modalities, test = None, ("image",), []
    if layout == "msd":
        if (root / "dataset.json").is_file():
            training, test, labels, modalities = _load_msd(root)
        else:
            training = _msd_folder_cases(root, "imagesTr", "labelsTr")
            test = _msd_folder_cases(root, "imagesTs", "labelsTs")
    elif layout == "paired":
        training = _paired_cases(root, data)
    elif layout == "h5":
        training = _h5_cases(root)
    elif layout == "stack":
        training = _stack_cases(root)
    else:
        if not data.list:
            raise UserError("data.layout is 'list' but data.list is not set; name a YAML or CSV file inside the root")
        training = _list_cases(root, data.list)
    if not training and not test:
        raise UserError(f"{root}: no cases found for layout {layout!r}")
    if data.labels is not None:
        labels = {i: name for i, name in enumerate(data.labels)}
    if labels is None:
        labels = _labels_from_data(training, data)
    if data.channel is not None:
        modalities = (modalities[0],)
    elif layout != "msd" and training:
        first, _ = load_image(training[0].image, h5_key=data.h5_image_key)
        modalities = tuple(f"channel {i}" for i in range(first.shape[3])) if first.ndim == 4 else ("image",)
    dataset = Dataset(root, layout, labels, tuple(training), tuple(test), modalities)
    log.info("dataset %s: layout %s, %d training and %d test cases, classes %s", root, layout,
             len(dataset.training), len(dataset.test), labels)
    return dataset


# --- splits -----------------------------------------------------------------------------------------

def split_cases(cases: Sequence[Case], data: DataConfig, seed: int) -> tuple[list[Case], list[Case], list[Case]]:
    """(train, val, test) from the training cases: explicit ids, k-fold, or a seeded fraction."""
    by_id = {c.id: c for c in cases}
    def pick(ids: Sequence[str], key: str) -> list[Case]:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise UserError(f"{key}: unknown case id(s) {', '.join(unknown[:5])}; known: {', '.join(list(by_id)[:8])} ...")
        return [by_id[i] for i in ids]
    test = pick(data.test_cases, "data.test_cases") if data.test_cases else []
    pool = [c for c in cases if c not in test]
    if data.val_cases is not None:
        val = pick(data.val_cases, "data.val_cases")
    elif data.folds > 1:
        if not 0 <= data.fold < data.folds:
            raise UserError(f"data.fold must be in 0..{data.folds - 1}, got {data.fold}")
        if data.folds > len(pool):
            raise UserError(f"data.folds={data.folds} but only {len(pool)} training cases")
        order = np.random.default_rng(seed).permutation(len(pool))
        val = [pool[i] for i in sorted(np.array_split(order, data.folds)[data.fold])]
    else:
        if not 0 <= data.val_fraction < 1:
            raise UserError(f"data.val_fraction must be in [0, 1), got {data.val_fraction}")
        order = np.random.default_rng(seed).permutation(len(pool))
        n_val = 0 if data.val_fraction == 0 or len(pool) < 2 else min(max(1, round(len(pool) * data.val_fraction)), len(pool) - 1)
        val = [pool[i] for i in sorted(order[:n_val])]
    train = [c for c in pool if c not in val]
    if not train:
        raise UserError("no training cases left after taking out validation and test cases")
    return train, val, test


# --- check -------------------------------------------------------------------------------------------

def _check_case(case: Case, dataset: Dataset, data: DataConfig, need_label: bool) -> tuple[list[Problem], CaseStats | None]:
    problems: list[Problem] = []
    read = dict(h5_key=data.h5_image_key, channel=data.channel, spacing=data.default_spacing)
    try:
        image, affine = load_image(case.image, **read)
    except UserError as err:
        return [Problem("error", str(case.image), str(err).split(": ", 1)[-1], "re-export or remove the case")], None
    spatial = image.shape[:3]
    if not np.issubdtype(image.dtype, np.number):
        return [Problem("error", str(case.image), f"voxel type {image.dtype} is not numeric")], None
    finite = np.isfinite(image)
    if not finite.all():
        problems.append(Problem("error", str(case.image), f"{int((~finite).sum())} NaN or Inf voxels",
                                "replace them before training"))
    low, high = (float(np.nanmin(image[finite])), float(np.nanmax(image[finite]))) if finite.any() else (0.0, 0.0)
    if low == high:
        problems.append(Problem("error", str(case.image), f"image is constant ({low})", "an empty export?"))
    counts: dict[int, int] = {}
    if case.label is None:
        if need_label:
            problems.append(Problem("error", str(case.image), "image has no label file",
                                    "add the label next to the others or list the pair explicitly"))
    else:
        try:
            label, label_affine = load_image(case.label, h5_key=data.h5_label_key, spacing=data.default_spacing, label=True)
        except UserError as err:
            problems.append(Problem("error", str(case.label), str(err).split(": ", 1)[-1],
                                    "add the label or remove the case"))
            label = None
        if label is not None:
            if label.shape[:3] != spatial:
                problems.append(Problem("error", str(case.label), f"shape {label.shape[:3]} differs from image shape {spatial}",
                                        f"the label must be on the grid of {case.image.name}"))
            elif not np.allclose(spacing_from_affine(affine), spacing_from_affine(label_affine), rtol=1e-3, atol=1e-4):
                problems.append(Problem("error", str(case.label), f"spacing {spacing_from_affine(label_affine)} differs "
                                        f"from image spacing {spacing_from_affine(affine)}",
                                        f"resample the label onto the grid of {case.image.name}"))
            elif not np.allclose(affine, label_affine, atol=1e-2):
                problems.append(Problem("warning", str(case.label), "origin or direction differs from the image's"))
            values, n = np.unique(label, return_counts=True)
            counts = {int(v): int(c) for v, c in zip(values, n)}
            unknown = [v for v in values if v not in dataset.labels]
            if unknown:
                problems.append(Problem("error", str(case.label), f"label values {[int(v) for v in unknown][:5]} not in "
                                        f"the label map {sorted(dataset.labels)}", "fix the labels or data.labels"))
            elif set(counts) == {0}:
                problems.append(Problem("warning", str(case.label), "label is all background",
                                        "the case is sampled with background crops only"))
    channels = image.shape[3] if image.ndim == 4 else 1
    return problems, CaseStats(tuple(spatial), spacing_from_affine(affine), channels, (low, high), counts)


def check_dataset(dataset: Dataset, data: DataConfig | None = None, workers: int = 2) -> CheckReport:
    """Read every case once (threads) and report each problem with its file and a hint."""
    data = data or DataConfig()
    report = CheckReport(dataset)
    cases = [(c, True) for c in dataset.training] + [(c, False) for c in dataset.test]
    seen: dict[str, Path] = {}
    for case, _ in cases:
        if case.id in seen:
            report.problems.append(Problem("error", str(case.image), f"case id {case.id!r} also used by {seen[case.id]}",
                                           "give every case a unique file name"))
        seen[case.id] = case.image
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda item: _check_case(item[0], dataset, data, item[1]), cases)
        for (case, _), (problems, stats) in zip(cases, results):
            report.problems.extend(problems)
            if stats is not None:
                report.stats[case.id] = stats
    return report
