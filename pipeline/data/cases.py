"""A case (image, label, field-of-view mask) and a dataset (its cases and class names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError


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


def inside_root(root: Path, relative: str | Path, source: Path) -> Path:
    """``root / relative`` resolved, refused when it leaves the root (../, absolute, links), is not a
    path at all (a number, null) or cannot be resolved (a symlink loop)."""
    if not isinstance(relative, (str, Path)) or not str(relative):
        raise UserError(f"{source}: {relative!r} is not a file path; give each image and label as a path string")
    try:
        path = (root / relative).resolve()
    except (RuntimeError, OSError) as err:  # Python reports a symlink loop as RuntimeError
        raise UserError(f"{source}: path {str(relative)!r} cannot be resolved ({err})") from None
    if not path.is_relative_to(root.resolve()):
        raise UserError(f"{source}: path {str(relative)!r} points outside the dataset root {root}; "
                        "keep every file inside the dataset folder")
    return path
