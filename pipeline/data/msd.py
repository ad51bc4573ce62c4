"""The Medical Segmentation Decathlon layout: ``dataset.json`` with imagesTr/ labelsTr/ imagesTs/ (labelsTs/)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .cases import Case, inside_root
from .channel_files import split_channel
from .io import case_id, list_images


def _msd_labels(meta: dict, source: Path) -> dict[int, str]:
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{source}: 'labels' must map label ids to names, e.g. "
                        '{"0": "background", "1": "organ"}')
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raw = {str(v): k for k, v in raw.items()}  # nnU-Net v2 maps names to ids
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        raise UserError(f"{source}: label ids in 'labels' must be integers, got {list(raw)}") from None
    if 0 not in labels or sorted(labels) != list(range(len(labels))):
        raise UserError(f"{source}: label ids must be 0..N-1 with 0 the background, got {sorted(labels)}")
    return labels


def load_msd(root: Path) -> tuple[list[Case], list[Case], dict[int, str] | None, tuple[str, ...]]:
    """Training and test cases, label names and channel names of ``root/dataset.json``: the MSD's
    (cases listed under ``training``) or nnU-Net v2's (no list: the cases are imagesTr/ and labelsTr/)."""
    source = root / "dataset.json"
    try:
        meta = json.loads(source.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
        raise UserError(f"{source}: cannot parse ({err})") from None
    if isinstance(meta, dict) and "training" not in meta and (root / "imagesTr").is_dir():
        training, test = msd_folder_cases(root, "imagesTr", "labelsTr"), msd_folder_cases(root, "imagesTs", "labelsTs")
    elif isinstance(meta, dict) and isinstance(meta.get("training"), list):
        training, test = _listed_cases(meta, root, source)
    else:
        raise UserError(f"{source}: expected a 'training' list of {{\"image\": ..., \"label\": ...}} entries "
                        "(or nnU-Net v2's imagesTr/ and labelsTr/ folders next to it)")
    modality = meta.get("modality") or meta.get("channel_names") or {"0": "CT"}
    if not isinstance(modality, dict):
        raise UserError(f"{source}: 'modality' must map channel numbers to names, e.g. {{\"0\": \"CT\"}}, "
                        f"got {modality!r}")
    return training, test, _msd_labels(meta, source), tuple(str(v) for _, v in sorted(modality.items()))


def _listed_cases(meta: dict, root: Path, source: Path) -> tuple[list[Case], list[Case]]:
    training = []
    for entry in meta["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise UserError(f"{source}: training entry {entry!r} needs 'image' and 'label'")
        image = inside_root(root, entry["image"], source)
        training.append(Case(case_id(image), image, inside_root(root, entry["label"], source)))
    test = []
    for entry in meta.get("test", []):
        rel = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(rel, str):
            raise UserError(f"{source}: test entry {entry!r} must be a path or have an 'image'")
        image = inside_root(root, rel, source)
        if isinstance(entry, dict) and "label" in entry:
            label = inside_root(root, entry["label"], source)
        else:
            guess = root / "labelsTs" / image.name
            label = guess if guess.is_file() else None
        test.append(Case(case_id(image), image, label))
    return training, test


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object, refusing a key given twice (JSON readers keep the last one without a word)."""
    seen = [k for i, (k, _) in enumerate(pairs) if k in (key for key, _ in pairs[:i])]
    if seen:
        raise ValueError(f"key {seen[0]!r} appears twice")
    return dict(pairs)


def msd_folder_cases(root: Path, images: str, labels: str) -> list[Case]:
    """Cases of ``root/images`` with their ``root/labels``. nnU-Net's one file per channel
    (``case_0000.nii.gz``, ``case_0001.nii.gz``, ...) is one case, ``case``, read from its channel-0 file."""
    if not (root / images).is_dir():
        return []
    label_files = {case_id(p): p for p in list_images(root / labels)} if (root / labels).is_dir() else {}
    files = list_images(root / images)
    stems = {case_id(p) for p in files}
    cases = []
    for path in files:
        case, index = split_channel(case_id(path))
        if index and f"{case}_0000" in stems:
            continue  # a further channel of ``case``: read with its channel-0 file
        cases.append(Case(case, path, label_files.get(case)))
    return cases
