"""Model packages: a trained network that leaves its run folder as one versioned file.

A package is a zip (or a folder) of three members:

- ``package.json``: format and version, the ONNX opset, the inference configuration (normalisation
  and its numbers, spacing, channels, patch, overlap, blending, flips, the decided post-processing),
  label names, provenance, and the SHA-256 of the other two;
- ``network.onnx``: the network as an ONNX graph (``onnx_graph.to_onnx``), weights included;
- ``weights.pt``: the same weights as a PyTorch state dict, for the torch engine (CUDA).

Reading runs no code from the file: JSON, an ONNX graph (data), and a state dict read
with ``torch.load(weights_only=True)``; only those member names are read, and each is
checked against its digest. A package of an unknown format, version or opset is
refused with one line.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import atomic_write
from .onnx_graph import OPSET

FORMAT, VERSION = "medseg-model", 1
MANIFEST, NETWORK, WEIGHTS = "package.json", "network.onnx", "weights.pt"
OPSETS = range(13, OPSET + 1)  # what this version's engines are known to run


@dataclass
class Package:
    """A package as read: its record, its ONNX graph and its weights (CPU tensors)."""

    path: Path
    meta: dict[str, Any]
    onnx: bytes
    weights: dict[str, torch.Tensor]

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in self.meta["labels"].items()}


def write_package(meta: dict[str, Any], onnx: bytes, weights: dict[str, torch.Tensor], out: str | Path) -> Path:
    """Write a package to ``out``: a ``.zip`` file, else a folder (which must be new or empty); atomic
    for a zip. ``meta`` gets the format, version, opset and the members' digests."""
    out = Path(out)
    if out.suffix == ".zip" and out.exists():
        raise UserError(f"{out}: exists; choose another --out or delete it first (a package is never overwritten)")
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    members = {NETWORK: onnx, WEIGHTS: buffer.getvalue()}
    record = {"format": FORMAT, "version": VERSION, "opset": OPSET, **meta,
              "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}}
    members[MANIFEST] = json.dumps(record, indent=2, sort_keys=False).encode("utf-8")
    if out.suffix == ".zip":
        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
        atomic_write(out, write)
        return out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose another --out (model.zip or a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        atomic_write(out / name, lambda tmp, data=data: tmp.write_bytes(data))
    return out


def read_package(path: str | Path) -> Package:
    """Read and check a package (zip or folder); UserError naming the file for anything wrong with it."""
    path = Path(path)
    members = _members(path)
    try:
        meta = json.loads(members[MANIFEST].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: {MANIFEST} is not valid JSON ({err}); the package is damaged") from None
    _check_record(path, meta)
    for name in (NETWORK, WEIGHTS):
        if hashlib.sha256(members[name]).hexdigest() != meta["sha256"].get(name):
            raise UserError(f"{path}: {name} does not match its digest in {MANIFEST}; the package is damaged, "
                            "export it again")
    try:
        weights = torch.load(io.BytesIO(members[WEIGHTS]), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything but tensors and plain containers
        raise UserError(f"{path}: {WEIGHTS} is not a plain state dict ({str(err).splitlines()[0][:160]})") from None
    return Package(path, meta, members[NETWORK], weights)


def _members(path: Path) -> dict[str, bytes]:
    """The three members' bytes from a zip or a folder; nothing else of the file is read."""
    names = (MANIFEST, NETWORK, WEIGHTS)
    if path.is_dir():
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise UserError(f"{path}: not a model package (no {', '.join(missing)}); make one with "
                            "python -m pipeline.export --run RUN --out model.zip")
        return {n: (path / n).read_bytes() for n in names}
    if not path.is_file():
        raise UserError(f"{path}: model package not found")
    try:
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())
            missing = [n for n in names if n not in present]
            if missing:
                raise UserError(f"{path}: not a model package (no {', '.join(missing)}); make one with "
                                "python -m pipeline.export --run RUN --out model.zip")
            return {n: archive.read(n) for n in names}
    except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile) as err:
        raise UserError(f"{path}: not a readable model package ({err}); it may be truncated") from None


def _check_record(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{path}: not a model package of this tool (format {found!r})")
    if meta.get("version") != VERSION:
        raise UserError(f"{path}: package version {meta.get('version')!r}, this pipeline reads version {VERSION}; "
                        "export the model again with this version, or use the pipeline version that made it")
    if meta.get("opset") not in OPSETS:
        raise UserError(f"{path}: ONNX opset {meta.get('opset')!r}, this pipeline runs opsets "
                        f"{OPSETS.start}-{OPSETS.stop - 1}; export the model again")
    missing = [k for k in ("config", "labels", "in_channels", "sha256") if not isinstance(meta.get(k), (dict, int))]
    if missing:
        raise UserError(f"{path}: {MANIFEST} lacks {', '.join(missing)}; the package is damaged")


def source_commit() -> str | None:
    """The git commit of this pipeline's code, with ``+changes`` when the tree is modified; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def created() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
