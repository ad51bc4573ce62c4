"""Cases, splits and the integrity check of a dataset root.

Layouts: an MSD folder with ``dataset.json`` (imagesTr/labelsTr/imagesTs and
optionally labelsTs, label names from ``labels``), or the same folders without
``dataset.json`` (cases paired by file name; nnU-Net's ``_0000`` channel suffix
is accepted). Every path must stay inside the root.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .io import Geometry, case_id, is_volume_file, read_geometry, read_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None = None


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
class CheckReport:
    dataset: Dataset
    problems: list[Problem] = field(default_factory=list)
    geometries: dict[str, Geometry] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _inside(root: Path, relative: str, source: Path) -> Path:
    """``root / relative`` resolved, refused when it leaves the root (../, absolute, links)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UserError(f"{source}: path {relative!r} points outside the dataset root {root}; "
                        "keep every file inside the dataset folder")
    return path


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


def _load_msd(root: Path) -> Dataset:
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
    return Dataset(root, "msd", _msd_labels(meta, source), tuple(training), tuple(test),
                   tuple(str(v) for _, v in sorted(modality.items())))


def _strip_channel(cid: str) -> str:
    return cid[:-5] if len(cid) > 5 and cid[-5] == "_" and cid[-4:].isdigit() else cid


def _pair_folder(root: Path, images: str, labels: str) -> list[Case]:
    image_dir, label_dir = root / images, root / labels
    if not image_dir.is_dir():
        return []
    label_files = {case_id(p): p for p in sorted(label_dir.iterdir()) if is_volume_file(p)} if label_dir.is_dir() else {}
    return [
        Case(_strip_channel(case_id(p)), p, label_files.get(_strip_channel(case_id(p))))
        for p in sorted(image_dir.iterdir())
        if is_volume_file(p)
    ]


def _load_msd_folders(root: Path) -> Dataset:
    """imagesTr/labelsTr without dataset.json: classes are the label values found in labelsTr."""
    training = _pair_folder(root, "imagesTr", "labelsTr")
    test = _pair_folder(root, "imagesTs", "labelsTs")
    top = 1
    for case in training:
        if case.label is not None and case.label.is_file():
            top = max(top, int(read_volume(case.label)[0].max()))
    labels = {0: "background", **{i: f"label {i}" for i in range(1, top + 1)}}
    return Dataset(root, "msd-folders", labels, tuple(training), tuple(test))


def load_dataset(root: str | Path) -> Dataset:
    """Detect the layout of ``root`` and list its cases; UserError when nothing usable is there."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found; run `python -m pipeline.synthetic --out {root}` "
                        "for demo data or set data.root to your dataset")
    if (root / "dataset.json").is_file():
        dataset = _load_msd(root)
    elif (root / "imagesTr").is_dir():
        dataset = _load_msd_folders(root)
    else:
        raise UserError(f"{root}: no dataset.json or imagesTr/ folder found; "
                        "lay the data out as imagesTr/ + labelsTr/ (MSD) or add a dataset.json")
    if not dataset.training and not dataset.test:
        raise UserError(f"{root}: no image files found (looked for {', '.join(('.nii.gz', '.nii', '.mha', '.nrrd'))})")
    log.info("dataset %s: layout %s, %d training and %d test cases", root, dataset.layout,
             len(dataset.training), len(dataset.test))
    return dataset


def split_cases(cases: Sequence[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Seeded split into (train, val); at least one case each side when there are two or more."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = 0 if val_fraction == 0 or len(cases) < 2 else min(max(1, round(len(cases) * val_fraction)), len(cases) - 1)
    val_idx = set(order[:n_val].tolist())
    return [c for i, c in enumerate(cases) if i not in val_idx], [c for i, c in enumerate(cases) if i in val_idx]


def _check_case(case: Case, need_label: bool) -> tuple[list[Problem], Geometry | None]:
    problems: list[Problem] = []
    image_file = str(case.image)
    if not case.image.is_file():
        return [Problem("error", image_file, "image file not found", "fix the path or remove the entry")], None
    try:
        image = read_geometry(case.image)
    except UserError as err:
        return [Problem("error", image_file, str(err).split(": ", 1)[-1], "re-export the file")], None
    if case.label is None:
        if need_label:
            problems.append(Problem("error", image_file, "image has no label file",
                                    "add labelsTr/<same name> or list the pair in dataset.json"))
        return problems, image
    if not case.label.is_file():
        problems.append(Problem("error", str(case.label), f"label file of {case.image.name} not found",
                                "add the label or remove the case"))
        return problems, image
    try:
        label = read_geometry(case.label)
    except UserError as err:
        return [Problem("error", str(case.label), str(err).split(": ", 1)[-1], "re-export the file")], image
    if image.shape[:3] != label.shape[:3]:
        problems.append(Problem("error", str(case.label), f"shape {label.shape} differs from image shape {image.shape}",
                                f"the label must be on the grid of {case.image.name}"))
    elif not np.allclose(image.spacing[:3], label.spacing[:3], rtol=1e-3, atol=1e-4):
        problems.append(Problem("error", str(case.label), f"spacing {label.spacing} differs from image spacing {image.spacing}",
                                f"resample the label onto the grid of {case.image.name}"))
    elif not np.allclose(image.origin[:3], label.origin[:3], atol=1e-2):
        problems.append(Problem("warning", str(case.label), f"origin {label.origin} differs from image origin {image.origin}"))
    return problems, image


def check_dataset(dataset: Dataset, workers: int = 4) -> CheckReport:
    """Header-level check of every case: files present and readable, image and label on one grid."""
    report = CheckReport(dataset)
    cases = [(c, True) for c in dataset.training] + [(c, False) for c in dataset.test]
    seen: dict[str, Path] = {}
    for case, _ in cases:
        if case.id in seen:
            report.problems.append(Problem("error", str(case.image), f"case id {case.id!r} also used by {seen[case.id]}",
                                           "give every case a unique file name"))
        seen[case.id] = case.image
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (case, _), (problems, geometry) in zip(cases, pool.map(lambda item: _check_case(*item), cases)):
            report.problems.extend(problems)
            if geometry is not None:
                report.geometries[case.id] = geometry
    return report
