"""Hostile and unusual datasets, written without the pipeline's own writers (so that the same generator can
judge an older checkout of the code), and the rule every entry point is held to.

A dataset is four small cases in one of five layouts (MSD NIfTI, paired MetaImage, HDF5, paired PNG, SenNet
TIFF stacks), with one mutation applied to case 0. Each mutation says what a correct tool does with it:
``accept`` (train, test and score as usual), ``refuse`` (exit 1 with the check's report or exit 2 with
exactly one ``error:`` line) or ``either``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import SimpleITK as sitk
from PIL import Image

FORMATS = ("msd", "mha", "h5", "png", "stack")
SHAPE = (24, 24, 16)  # x, y, z of the 3D cases (png: x, y)
SPACING = (0.8, 0.8, 2.0)

# mutation: (expected outcome, formats it applies to)
MUTATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "valid": ("accept", FORMATS),
    "empty_label": ("accept", FORMATS),
    "label_0_255": ("either", FORMATS),
    "missing_label": ("either", FORMATS),
    "truncated": ("refuse", FORMATS),
    "garbage": ("refuse", FORMATS),
    "empty_file": ("refuse", FORMATS),
    "outside_link": ("refuse", FORMATS),
    "link_loop": ("refuse", FORMATS),
    "constant_image": ("refuse", FORMATS),
    "shape_mismatch": ("refuse", FORMATS),
    "nan_image": ("refuse", ("msd", "mha", "h5", "stack")),
    "nan_label": ("refuse", ("msd", "mha", "h5", "stack")),
    "fraction_label": ("refuse", ("msd", "mha", "h5", "stack")),
    "negative_label": ("refuse", ("msd", "mha", "h5")),
    "flipped_label": ("refuse", ("msd", "mha")),
    "spacing_mismatch": ("refuse", ("msd", "mha")),
    "two_channel": ("refuse", ("msd", "mha")),
    "rgb_label": ("refuse", ("png", "stack")),
    "bad_json": ("refuse", ("msd",)),
}
IMAGE_MUTATIONS = {"nan_image", "constant_image", "two_channel"}
FILE_MUTATIONS = {"truncated", "garbage", "empty_file", "outside_link", "link_loop"}


@dataclass
class Case:
    """One case before writing: arrays in (x, y, z) order (png: (x, y)) and the label's geometry."""
    image: np.ndarray
    label: np.ndarray
    label_spacing: tuple[float, ...] = SPACING
    label_flip_x: bool = False


def combinations() -> list[tuple[str, str]]:
    """Every (format, mutation) pair that applies."""
    return [(fmt, m) for m, (_, formats) in MUTATIONS.items() for fmt in formats]


def clean_cases(fmt: str, seed: int, n: int = 4) -> list[Case]:
    """``n`` noisy images of a bright ball (png: a disc) and its 0/1 mask."""
    rng = np.random.default_rng(seed)
    shape = SHAPE[:2] if fmt == "png" else SHAPE
    grid = np.indices(shape).astype(float)
    cases = []
    for _ in range(n):
        centre = [rng.uniform(0.35, 0.65) * s for s in shape]
        label = (sum((g - c) ** 2 for g, c in zip(grid, centre)) < (shape[0] / 5) ** 2).astype(np.uint8)
        image = rng.normal(60, 10, shape) + 100 * label
        cases.append(Case(np.clip(image, 0, 255).astype(np.uint8 if fmt == "png" else np.float32), label))
    return cases


def mutate_arrays(case: Case, mutation: str) -> Case:
    """Case 0 after an array-level mutation (file-level ones are applied after writing)."""
    image, label = case.image.copy(), case.label.copy()
    if mutation == "empty_label":
        label[:] = 0
    elif mutation in ("label_0_255", "rgb_label"):
        label = label * 255 if mutation == "label_0_255" else label
    elif mutation == "constant_image":
        image[:] = 7
    elif mutation == "shape_mismatch":
        label = label[..., :-1]
    elif mutation == "nan_image":
        image[1, 1, 1] = np.nan
    elif mutation in ("nan_label", "fraction_label"):
        label = label.astype(np.float32)
        label[label > 0] = np.nan if mutation == "nan_label" else 0.5
    elif mutation == "negative_label":
        label = label.astype(np.int16) * -1
    elif mutation == "two_channel":
        image = np.stack([image, image], axis=-1)
    spacing = (SPACING[0] * 1.5, *SPACING[1:]) if mutation == "spacing_mismatch" else SPACING
    return Case(image, label, spacing, mutation == "flipped_label")


def write_dataset(root: Path, fmt: str, mutation: str, seed: int, damage_label: bool = False) -> Path:
    """A four-case dataset of ``fmt`` under ``root`` with ``mutation`` applied to case 0 (file-level damage to
    its image, or to its label when ``damage_label``); returns the root."""
    cases = clean_cases(fmt, seed)
    cases[0] = mutate_arrays(cases[0], mutation)
    root.mkdir(parents=True)
    files = [WRITERS[fmt](root, f"case_{i}", case, mutation == "rgb_label" and i == 0) for i, case in enumerate(cases)]
    if fmt == "msd":
        _write_dataset_json(root, files, broken=mutation == "bad_json")
    image, label = files[0]
    target = label if damage_label else image
    if target.is_dir():
        target = sorted(target.iterdir())[len(list(target.iterdir())) // 2]  # one slice in the middle
    if mutation in FILE_MUTATIONS:
        damage(target, mutation, root.parent)
    if mutation == "missing_label":
        shutil.rmtree(label) if label.is_dir() else label.unlink()
    return root


def damage(path: Path, mutation: str, outside: Path) -> None:
    """Truncate, overwrite or replace ``path`` by a link (to a copy outside the root, or to itself)."""
    data = path.read_bytes()
    if mutation == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif mutation == "garbage":
        path.write_bytes(np.random.default_rng(len(data)).bytes(len(data)))
    elif mutation == "empty_file":
        path.write_bytes(b"")
    else:
        path.unlink()
        if mutation == "outside_link":
            copy = outside / f"outside_{path.parent.parent.name}_{path.name}"
            copy.write_bytes(data)
            path.symlink_to(copy)
        else:
            path.symlink_to(path)


def _affine(spacing, flip_x: bool, shape) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    if flip_x:
        affine[0, 0], affine[0, 3] = -spacing[0], spacing[0] * (shape[0] - 1)
    return affine


def _write_msd(root: Path, name: str, case: Case, _rgb: bool) -> tuple[Path, Path]:
    image, label = root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz"
    for folder in (image.parent, label.parent):
        folder.mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(case.image, _affine(SPACING, False, case.image.shape)), image)
    nib.save(nib.Nifti1Image(case.label, _affine(case.label_spacing, case.label_flip_x, case.label.shape)), label)
    return image, label


def _itk(array: np.ndarray, spacing, flip_x: bool) -> sitk.Image:
    vector = array.ndim == 4
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, (0, 1, 2), (2, 1, 0))), isVector=vector)
    image.SetSpacing([float(s) for s in spacing])
    if flip_x:
        image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    return image


def _write_mha(root: Path, name: str, case: Case, _rgb: bool) -> tuple[Path, Path]:
    image, label = root / "images" / f"{name}.mha", root / "labels" / f"{name}.mha"
    for folder in (image.parent, label.parent):
        folder.mkdir(exist_ok=True)
    sitk.WriteImage(_itk(case.image, SPACING, False), str(image))
    sitk.WriteImage(_itk(case.label, case.label_spacing, case.label_flip_x), str(label))
    return image, label


def _write_h5(root: Path, name: str, case: Case, _rgb: bool) -> tuple[Path, Path]:
    path = root / f"{name}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=case.image)
        f.create_dataset("label", data=case.label)
        f.attrs["spacing"] = SPACING
    return path, path


def _rgb(label: np.ndarray) -> np.ndarray:
    """Colour-coded labels: red for class 1, green for the lower half of it as class 2."""
    rgb = np.zeros((*label.shape, 3), np.uint8)
    rgb[..., 0] = 255 * (label > 0)
    half = label.shape[0] // 2
    rgb[half:, ..., 0], rgb[half:, ..., 1] = 0, 255 * (label[half:] > 0)
    return rgb


def _write_png(root: Path, name: str, case: Case, rgb: bool) -> tuple[Path, Path]:
    image, label = root / "images" / f"{name}.png", root / "labels" / f"{name}.png"
    for folder in (image.parent, label.parent):
        folder.mkdir(exist_ok=True)
    Image.fromarray(case.image.T).save(image)  # PIL takes (rows = y, columns = x)
    Image.fromarray(np.swapaxes(_rgb(case.label), 0, 1) if rgb else case.label.T).save(label)
    return image, label


def _slice_image(plane: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(plane.T.astype(np.float32) if plane.dtype.kind == "f" else plane.T))


def _write_stack(root: Path, name: str, case: Case, rgb: bool) -> tuple[Path, Path]:
    image, label = root / name / "images", root / name / "labels"
    for folder in (image, label):
        folder.mkdir(parents=True)
    for z in range(case.image.shape[2]):
        _slice_image(case.image[..., z]).save(image / f"{z:04d}.tif")
    for z in range(case.label.shape[2]):
        plane = case.label[..., z]
        slice_image = Image.fromarray(np.swapaxes(_rgb(plane), 0, 1)) if rgb else _slice_image(plane)
        slice_image.save(label / f"{z:04d}.tif")
    return image, label


def _write_dataset_json(root: Path, files: list[tuple[Path, Path]], broken: bool) -> None:
    meta = {"name": "hostile", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "ball"},
            "training": [{"image": f"./{i.relative_to(root)}", "label": f"./{l.relative_to(root)}"} for i, l in files]}
    text = json.dumps(meta, indent=1)
    (root / "dataset.json").write_text(text[: len(text) // 2] if broken else text)


WRITERS = {"msd": _write_msd, "mha": _write_mha, "h5": _write_h5, "png": _write_png, "stack": _write_stack}


def snapshot(folder: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder`` except under ``skip``: what a run must leave alone."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        if skip is not None and Path(dirpath).is_relative_to(skip):
            continue
        for name in names:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found
