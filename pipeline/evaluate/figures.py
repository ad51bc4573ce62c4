"""Figures: training curves and three-plane slice images (image, label, prediction).

Uses matplotlib's object API with the Agg canvas, so nothing touches global
backend state.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from ..data.label_maps import CLASS_COLOURS
from ..files import atomic_write


def _save(fig: Figure, out: str | Path) -> None:
    atomic_write(out, lambda tmp: FigureCanvasAgg(fig).print_png(str(tmp)))


def plot_training_log(log_csv: str | Path, out: str | Path) -> None:
    """``loss.png``: training loss and validation Dice per epoch, from ``log.csv``."""
    with open(log_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(7, 3.5), tight_layout=True)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, [float(r["train_loss"]) for r in rows], color="tab:blue", marker=".", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (Dice + CE)", color="tab:blue")
    val = [(int(r["epoch"]), float(r["val_dice"])) for r in rows if r["val_dice"]]
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), color="tab:orange", marker="o", label="val Dice")
        ax2.set_ylabel("validation Dice (foreground)", color="tab:orange")
        ax2.set_ylim(0, 1)
    _save(fig, out)


def _to_ras(array: np.ndarray | None, affine: np.ndarray | None) -> np.ndarray | None:
    if array is None or affine is None:
        return array
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def _focus(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """Voxel to cut through: the label's centre of mass, else the prediction's, else the centre."""
    focus = label if label is not None and label.any() else pred if pred is not None and pred.any() else None
    if focus is None:
        return np.asarray(image.shape) // 2
    return np.round(ndimage.center_of_mass(focus > 0)).astype(int)


def _planes(centre, spacing, single: bool) -> list[tuple[str, tuple, tuple[float, float]]]:
    """(name, index, (row spacing, column spacing)) of the planes through ``centre`` (RAS voxel order),
    rows running up; one plane, as stored (rows down), for a single-slice volume."""
    if single:
        return [("image", (slice(None), slice(None), 0), (spacing[0], spacing[1]))]
    return [
        ("sagittal", (centre[0], slice(None), slice(None)), (spacing[2], spacing[1])),
        ("coronal", (slice(None), centre[1], slice(None)), (spacing[2], spacing[0])),
        ("axial", (slice(None), slice(None), centre[2]), (spacing[1], spacing[0])),
    ]


def slice_figure(
    image: np.ndarray,
    label: np.ndarray | None,
    pred: np.ndarray | None,
    spacing: tuple[float, ...],
    out: str | Path,
    affine: np.ndarray | None = None,
    title: str = "",
    window: tuple[float, float] | None = None,
) -> None:
    """Sagittal, coronal and axial planes through the label's centre of mass.

    Arrays are (x, y, z) in file voxel order; with ``affine`` they are turned to
    RAS for display. Columns: image, label overlay, prediction overlay.
    """
    if image.ndim == 4:  # colour: show the mean over channels
        image = image.mean(axis=-1)
    image, label, pred = (_to_ras(a, affine) for a in (image, label, pred))
    if affine is not None:
        spacing = tuple(np.asarray(spacing)[np.argsort(nib.orientations.io_orientation(affine)[:, 0])])
    low, high = window or tuple(np.percentile(image, [0.5, 99.5]))
    n_classes = int(max(label.max() if label is not None else 0, pred.max() if pred is not None else 0, 1))
    cmap = ListedColormap(list(CLASS_COLOURS[: max(n_classes, 1)]))

    single = image.shape[2] == 1
    planes = _planes(_focus(image, label, pred), spacing, single)
    columns = [("image", None), ("label", label), ("prediction", pred)]
    fig = Figure(figsize=(9, 3 * len(planes)), tight_layout=True)
    for row, (plane, index, (dr, dc)) in enumerate(planes):
        def view(plane_data: np.ndarray) -> np.ndarray:
            return plane_data if single else np.flipud(plane_data.T)

        base = view(image[index])
        for col, (name, overlay) in enumerate(columns):
            ax = fig.add_subplot(len(planes), 3, row * 3 + col + 1)
            ax.imshow(base, cmap="gray", vmin=low, vmax=high, aspect=dr / dc, interpolation="nearest")
            if overlay is not None:
                plane_labels = view(overlay[index]).astype(float)
                ax.imshow(np.ma.masked_where(plane_labels == 0, plane_labels), cmap=cmap, vmin=1,
                          vmax=max(n_classes, 1) + 1e-6, alpha=0.55, aspect=dr / dc, interpolation="nearest")
            elif name != "image":
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", color="white")
            ax.set(xticks=[], yticks=[], title=name if row == 0 else "", ylabel=plane if col == 0 else "")
    if title:
        fig.suptitle(title)
    _save(fig, out)


ERROR_COLOURS = {"false negative": "#e6194b", "false positive": "#00a2ff"}


def error_figure(
    cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]],
    out: str | Path,
    crop: int | None = None,
) -> None:
    """One row per case: image, label, prediction, errors (false negatives and false positives
    in two colours, counted over the whole case), on the axial slice with the most label voxels
    (the image itself for 2D).

    cases: (title, image, label, prediction, affine) with (x, y, z) arrays in file voxel order;
    labels and predictions are binarised (any foreground class). ``crop``: show only a square
    of this many voxels around the slice's label centre (thin structures such as retinal vessels).
    """
    fig = Figure(figsize=(12, 3.2 * len(cases)), dpi=72, tight_layout=True)
    error_cmap = ListedColormap(list(ERROR_COLOURS.values()))
    for row, (title, image, label, pred, affine) in enumerate(cases):
        if image.ndim == 4:
            image = image.mean(axis=-1)
        image, label, pred = (_to_ras(a, affine) for a in (image, label, pred))
        ref, hit = label > 0, pred > 0
        z = int(np.argmax(ref.sum(axis=(0, 1))))
        single = image.shape[2] == 1
        def view(a: np.ndarray) -> np.ndarray:
            return a[..., z] if single else np.flipud(a[..., z].T)
        errors = np.zeros(ref.shape, dtype=float)
        errors[ref & ~hit] = 1
        errors[~ref & hit] = 2
        window = _crop_window(view(ref), crop)
        base = view(image)[window]
        low, high = np.percentile(base, [0.5, 99.5])
        panels = [("image", None, None), ("label", view(ref).astype(float)[window], "#3cb44b"),
                  ("prediction", view(hit).astype(float)[window], "#ffe119"), ("errors", view(errors)[window], None)]
        for col, (name, overlay, colour) in enumerate(panels):
            ax = fig.add_subplot(len(cases), 4, row * 4 + col + 1)
            ax.imshow(base, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if overlay is not None:
                cmap = ListedColormap([colour]) if colour else error_cmap
                ax.imshow(np.ma.masked_where(overlay == 0, overlay), cmap=cmap, vmin=1, vmax=2,
                          alpha=0.6 if colour else 0.9, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "errors":  # counted over the whole case, not just the slice shown
                name = f"errors: FN {int((errors == 1).sum())}, FP {int((errors == 2).sum())}"
            ax.set_title(f"{title}: {name}" if col == 0 else name, fontsize=10)
    if crop:
        fig.suptitle(f"{crop}x{crop}-voxel crops around the label's centre", x=0.02, ha="left")
    fig.legend(handles=[Patch(facecolor=colour, label=name) for name, colour in ERROR_COLOURS.items()],
               loc="upper right", ncols=2)
    _save(fig, out)


def _crop_window(plane: np.ndarray, crop: int | None) -> tuple[slice, slice]:
    """Slices of a ``crop``-sized square around the centre of mass of ``plane`` (all of it without crop)."""
    if not crop or not plane.any():
        return slice(None), slice(None)
    centre = np.round(ndimage.center_of_mass(plane)).astype(int)
    starts = [int(np.clip(c - crop // 2, 0, max(n - crop, 0))) for c, n in zip(centre, plane.shape)]
    return tuple(slice(s, s + crop) for s in starts)
