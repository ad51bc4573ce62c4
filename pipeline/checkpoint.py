"""Checkpoints: atomic writes, untrusted-input loading, RNG states as plain tensors.

A checkpoint holds model, optimizer, scheduler and scaler state, the epoch, the
best validation score, the global random states (Python, NumPy, torch) and the
resolved config (``train.state.TrainState.checkpoint``). It is loaded with
``torch.load(weights_only=True)``, so every value is a tensor, number, string or
container of those: NumPy states are stored as tensors for that reason. It sits below training
(which writes and resumes) and prediction (which reads the weights).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .files import atomic_write

log = logging.getLogger(__name__)


def _numpy_state(state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_tuple(state: dict) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


def capture_rng() -> dict:
    """The global random states of Python, NumPy and torch, as tensors and numbers."""
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": _numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict) -> None:
    """Inverse of ``capture_rng``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state(_numpy_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])


def weights_digest(*states: dict[str, torch.Tensor]) -> str:
    """SHA-256 of state dicts' names and values, in order: which weights (one network, or the folds of an
    ensemble) a decision was made with."""
    digest = hashlib.sha256()
    for i, weights in enumerate(states):
        if i:
            digest.update(f"|member {i}|".encode())
        for name in sorted(weights):
            tensor = weights[name].detach().cpu().contiguous()
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def previous_path(path: Path) -> Path:
    """Where ``save_checkpoint(keep_previous=True)`` keeps the checkpoint it replaces."""
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically and durably (temporary file, fsync, rename).

    ``keep_previous`` first moves the existing file to ``<name>.prev.pt``, so that
    a complete checkpoint exists at every instant, whatever kills the process.
    """
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp), durable=True,
                     previous=previous_path(path) if keep_previous else None)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError ("... write failed")
        full = err.errno == errno.ENOSPC if isinstance(err, OSError) else "write failed" in str(err)
        if not full:
            raise
        raise UserError(f"{path}: disk full while saving the checkpoint (the last complete one is kept); free "
                        f"space and continue with train.py --resume {path.parent.parent}") from None


REQUIRED = ("model", "config", "labels", "in_channels", "epoch")  # what prediction and resuming read


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint as untrusted input (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = " ".join(str(err).split())[:160]
        raise UserError(f"{path}: not a loadable checkpoint ({first}); it may be truncated or not made by "
                        "this tool") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this tool (no {', '.join(missing)})")
    if not all(isinstance(state[k], dict) for k in ("model", "config", "labels")):
        raise UserError(f"{path}: not a checkpoint of this tool (model, config or labels is not a mapping)")
    return state


def load_resume_checkpoint(path: Path) -> dict[str, Any]:
    """``last.pt``, or the previous one with a warning when ``last.pt`` is missing or damaged."""
    try:
        return load_checkpoint(path)
    except UserError as err:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        log.warning("%s; resuming from the previous checkpoint %s", err, previous.name)
        return load_checkpoint(previous)


def check_room(folder: Path, model: nn.Module) -> None:
    """Room for a few checkpoints (weights and optimizer state each), else a clear error."""
    checkpoint = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(folder).free
    if free < 4 * checkpoint + 50 * 2**20:
        raise UserError(f"{folder}: only {free / 2**20:.0f} MB free, training needs about "
                        f"{(4 * checkpoint) / 2**20 + 50:.0f} MB for checkpoints; free space or set output_dir")
