"""``log.csv`` (one row per epoch, append-only) and its figure ``loss.png``."""

from __future__ import annotations

import csv
from pathlib import Path

from ..evaluate.figures import plot_training_log

LOG_FIELDS = ("epoch", "lr", "train_loss", "val_dice", "seconds")


def last_logged_epoch(path: Path) -> int:
    """The highest epoch in ``log.csv`` (0 when there is none)."""
    if not path.exists():
        return 0
    with open(path, newline="", encoding="utf-8") as f:
        return max((int(r["epoch"]) for r in csv.DictReader(f)), default=0)


def append_row(path: Path, row: dict) -> bool:
    """Append ``row`` unless its epoch is already logged (a retrained epoch keeps its first row);
    returns whether it was written."""
    if int(row["epoch"]) <= last_logged_epoch(path):
        return False
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    return True


def plot(run_dir: Path) -> None:
    """Redraw ``loss.png`` from ``log.csv``."""
    plot_training_log(run_dir / "log.csv", run_dir / "loss.png")
