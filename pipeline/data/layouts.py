"""Cases of a dataset root: its layout, its cases and its class names.

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

Every path must stay inside the root, in every layout: ``../``, absolute paths
and links that leave it are refused (copy such files in, or point ``data.root``
at the folder that holds them).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..yamlfile import read_yaml
from ..errors import UserError
from .cases import Case, Dataset, inside_root
from .io import (H5_SUFFIXES, IMAGE_2D_SUFFIXES, case_id, list_images, load_image, natural_key,
                 reader_options)
from .label_maps import class_ids
from .msd import load_msd, msd_folder_cases
from .stack import SliceStack, stack_statistics

log = logging.getLogger(__name__)

LABEL_DIRS = ("labels", "label", "1st_manual", "manual", "masks", "gt", "groundtruth", "ground_truth")
FOV_DIRS = ("mask", "fov", "roi")


# --- paired folders ----------------------------------------------------------------------------

_NUMBER = re.compile(r"^(\d+)")


def _pair_key(path: Path, by: str) -> str | None:
    if by == "name":
        return case_id(path)
    match = _NUMBER.match(path.name)
    return match.group(1) if match else None


def _find_dir(root: Path, configured: str | None, candidates: Sequence[str], what: str) -> Path | None:
    if configured is not None:
        folder = inside_root(root, configured, root)
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
    image_files = list_images(images)
    by = data.pair_by
    if by == "auto":
        names = {case_id(p) for p in image_files}
        label_names = {case_id(p) for p in list_images(labels)} if labels else names
        by = "name" if names & label_names else "number"
    def index(folder: Path | None) -> dict[str, Path]:
        if folder is None:
            return {}
        found: dict[str, Path] = {}
        for p in list_images(folder):
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
    return [Case(case_id(p), p, p) for p in list_images(root, H5_SUFFIXES)]


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
    source = inside_root(root, listing, root)
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
        image = inside_root(root, entry["image"], source)
        label = inside_root(root, entry["label"], source) if entry.get("label") else None
        mask = inside_root(root, entry["mask"], source) if entry.get("mask") else None
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
    raise UserError(f"{root}: cannot tell the layout (no dataset.json, imagesTr/, .h5 files, <case>/images/ or "
                    "images/); "
                    "set data.layout")


def _label_values(path: Path, data: DataConfig) -> set[int]:
    """The values of a label file (a slice stack is streamed slab by slab)."""
    if path.is_dir() and _has_slices(path):
        return set(stack_statistics(SliceStack(path, label=True), label=True).counts)
    label, _ = load_image(path, **reader_options(data, label=True))
    return {int(v) for v in np.unique(class_ids(label, path))}


def _labels_from_data(cases: Sequence[Case], data: DataConfig) -> dict[int, str]:
    """Class ids 0..max found in the readable label files (names 'label i'; the check names unreadable ones).
    Ids no label uses are refused (0/255 masks stored as int16 would train a 256-class network)."""
    found = {0}
    for case in cases:
        if case.label is not None and case.label.exists():
            try:
                found |= _label_values(case.label, data)
            except UserError:
                continue
    top, where = max(max(found), 1), next((c.label.parent for c in cases if c.label is not None), "labels")
    missing = sorted(set(range(top + 1)) - found) if top > 1 else []
    if missing:
        raise UserError(f"{where}: label values {sorted(found)[:8]} leave {len(missing)} class id(s) below {top} "
                        f"unused (e.g. {missing[0]}), which would train a {top + 1}-class network; number the classes "
                        "0, 1, 2, ... (a mask as 0/1), or name them with data.labels")
    return {0: "background", **{i: f"label {i}" for i in range(1, top + 1)}}


def _channels(cases: Sequence[Case], data: DataConfig) -> tuple[str, ...]:
    """Channel names from the first readable image: ``channel i`` for colour images, else ``image``."""
    for case in cases:
        try:
            first, _ = load_image(case.image, **{**reader_options(data), "channel": None})
        except UserError:
            continue  # the dataset check names it
        return tuple(f"channel {i}" for i in range(first.shape[3])) if first.ndim == 4 else ("image",)
    return ("image",)


def _layout_cases(root: Path, layout: str, data: DataConfig) -> tuple[list[Case], list[Case], dict | None, tuple]:
    """(training, test, labels or None, modalities) of ``root`` read as ``layout``."""
    if layout == "msd":
        if (root / "dataset.json").is_file():
            return load_msd(root)
        return (msd_folder_cases(root, "imagesTr", "labelsTr"), msd_folder_cases(root, "imagesTs", "labelsTs"),
                None, ("image",))
    if layout == "paired":
        return _paired_cases(root, data), [], None, ("image",)
    if layout == "h5":
        return _h5_cases(root), [], None, ("image",)
    if layout == "stack":
        return _stack_cases(root), [], None, ("image",)
    if not data.list:
        raise UserError("data.layout is 'list' but data.list is not set; name a YAML or CSV file inside the root")
    return _list_cases(root, data.list), [], None, ("image",)


def _check_inside(root: Path, cases: Sequence[Case]) -> None:
    """Every file of every case resolves inside the root, whatever the layout (folders and their slices included)."""
    top = root.resolve()
    paths = [p for case in cases for p in (case.image, case.label, case.mask) if p is not None]
    for path in paths + [f for p in paths if p.is_dir() for f in p.iterdir()]:  # a stack's slices too
        try:
            target = path.resolve()
        except (RuntimeError, OSError) as err:  # a symlink loop
            raise UserError(f"{path}: cannot be resolved ({err})") from None
        if not target.is_relative_to(top):
            raise UserError(f"{path}: a link to {target}, outside the dataset root {root}; copy the file in, or set "
                            "data.root to a folder that holds it")


def load_dataset(root: str | Path, data: DataConfig | None = None) -> Dataset:
    """Detect or apply the layout of ``root`` and list its cases; UserError when nothing usable is there."""
    data = data or DataConfig()
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found; run `python -m pipeline.synthetic --out {root}` "
                        "for demo data or set data.root to your dataset")
    layout = data.layout if data.layout != "auto" else ("list" if data.list else _detect_layout(root))
    training, test, labels, modalities = _layout_cases(root, layout, data)
    if not training and not test:
        raise UserError(f"{root}: no cases found for layout {layout!r}")
    _check_inside(root, [*training, *test])
    if data.labels is not None:
        labels = {i: name for i, name in enumerate(data.labels)}
    if labels is None:
        labels = _labels_from_data(training, data)
    if data.channel is not None:
        modalities = (modalities[0],)
    elif layout not in ("msd", "stack") and training:  # stacks: one channel (colour slices: the first)
        modalities = _channels(training, data)
    dataset = Dataset(root, layout, labels, tuple(training), tuple(test), modalities)
    log.info("dataset %s: layout %s, %d training and %d test cases, classes %s", root, layout,
             len(dataset.training), len(dataset.test), labels)
    return dataset
