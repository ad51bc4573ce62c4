"""Atomic file writes, shared by every stage that writes outputs.

A writer fills a temporary file beside the target, which is then renamed into
place, so a killed process never leaves a half-written file under the final
name. The temporary name carries the process id (two processes never share one)
and ends with the target's own name, so format-by-suffix writers (nibabel,
SimpleITK) still see ``.nii.gz`` or ``.mha``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object], durable: bool = False,
                 previous: Path | None = None) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``; returns ``path``.

    ``durable``: fsync the file and its folder, so the rename survives a power cut.
    ``previous``: move an existing ``path`` there first (a complete file exists at every instant).
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        if durable:
            _fsync(tmp)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
