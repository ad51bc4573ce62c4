"""Deterministic CT-like phantoms in the Medical Segmentation Decathlon layout.

Each case is an abdomen-like cross-section in Hounsfield units: air (-1000),
a fat layer (-100), soft tissue (40), a vertebral body (700), a contrast-enhanced
organ (label 1, ~120) and tubular vessels running through it (label 2, ~250),
blurred for partial volume and with Gaussian noise. Voxels are anisotropic
(0.8 x 0.8 x 2.0 mm by default) with a scanner-like LPS-flipped affine.

    python -m pipeline.synthetic --out data/demo [--train 12 --test 4 --shape 160 160 96]
    python -m pipeline.synthetic --kind kidney-stack --shape 1024 1024 2000 --out /tmp/kidney (see ``kidney.py``)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import UserError, exit_on_user_error, setup_logging
from .kidney import KidneySpec, generate_kidney_stacks
from .writers import save_nifti

log = logging.getLogger(__name__)

LABELS = {"0": "background", "1": "organ", "2": "vessel"}
MARKER = ".synthetic.json"


@dataclass(frozen=True)
class PhantomSpec:
    shape: tuple[int, int, int] = (160, 160, 96)
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.0)
    n_train: int = 12
    n_test: int = 4
    seed: int = 0
    noise_hu: float = 20.0


def _vessels(spec: PhantomSpec, rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Two or three smooth tubes of radius 3-5 mm through the organ (centre, radii in mm), mostly
    cranio-caudal as portal and hepatic veins run: a boolean mask of ``spec.shape``."""
    spacing = np.asarray(spec.spacing)
    centreline = np.zeros(spec.shape, dtype=bool)
    radius_at = np.zeros(spec.shape, dtype=np.float32)
    t = np.linspace(-1.3, 1.3, 600)
    for _ in range(rng.integers(2, 4)):
        direction = rng.normal(size=3)
        direction[2] *= 2.5
        direction /= np.linalg.norm(direction)
        bend = rng.normal(scale=0.25, size=(2, 3)) * radii
        freq = rng.uniform(1.0, 2.5)
        points = (centre + t[:, None] * direction * radii + np.sin(freq * np.pi * t)[:, None] * bend[0]
                  + (t**2)[:, None] * bend[1])
        idx = np.round(points / spacing + (np.asarray(spec.shape) - 1) / 2).astype(int)
        idx = idx[np.all((idx >= 0) & (idx < spec.shape), axis=1)]
        centreline[tuple(idx.T)] = True
        radius_at[tuple(idx.T)] = rng.uniform(3.0, 5.0)
    distance, nearest = ndimage.distance_transform_edt(~centreline, sampling=spacing, return_indices=True)
    return distance <= radius_at[tuple(nearest)]


def make_phantom(spec: PhantomSpec, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case: (image float32 HU, label uint8, affine 4x4), arrays of shape ``spec.shape``."""
    rng = np.random.default_rng([spec.seed, index])
    sx, sy, sz = spec.shape
    spacing = np.asarray(spec.spacing)
    # physical coordinates (mm) centred on the volume
    x, y, z = np.meshgrid(
        *[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(spec.shape, spacing)], indexing="ij", sparse=True
    )
    half = np.asarray(spec.shape) * spacing / 2

    # body: elliptic cylinder whose radii vary slowly along z
    wobble = 1 + 0.04 * np.sin(z / half[2] * np.pi + rng.uniform(0, 2 * np.pi))
    ax, ay = half[0] * rng.uniform(0.86, 0.94) * wobble, half[1] * rng.uniform(0.74, 0.84) * wobble
    body_r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2)
    image = np.full(spec.shape, -1000.0, dtype=np.float32)
    image[np.broadcast_to(body_r < 1, spec.shape)] = -100.0  # fat
    inner = np.broadcast_to(body_r < 1 - 7 / min(ax.min(), ay.min()), spec.shape)
    image[inner] = 40.0  # soft tissue

    # vertebral body: posterior cylinder
    spine = np.broadcast_to(np.hypot(x, y - 0.55 * ay) < 0.16 * ay, spec.shape)
    image[spine & inner] = 700.0

    # organ: a lobulated ellipsoid on one side of the abdomen
    centre = np.array([rng.uniform(-0.35, -0.2) * ax.mean(), rng.uniform(-0.2, 0.1) * ay.mean(),
                       rng.uniform(-0.1, 0.1) * half[2]])
    radii = np.array([rng.uniform(0.34, 0.42) * ax.mean(), rng.uniform(0.32, 0.4) * ay.mean(),
                      rng.uniform(0.55, 0.7) * half[2]])
    q = np.sqrt(sum(((axis - c) / r) ** 2 for axis, c, r in zip((x, y, z), centre, radii)))
    k = rng.uniform(1.5, 3.0, size=3) * np.pi / radii
    phase = rng.uniform(0, 2 * np.pi, size=3)
    lobes = 0.12 * np.sin(k[0] * x + phase[0]) * np.sin(k[1] * y + phase[1]) * np.cos(k[2] * z + phase[2])
    organ = (q < 1 + lobes) & inner & ~spine

    vessel = _vessels(spec, rng, centre, radii) & inner & ~spine

    label = np.zeros(spec.shape, dtype=np.uint8)
    label[organ] = 1
    label[vessel] = 2
    image[organ] = rng.uniform(100, 140)
    image[vessel] = rng.uniform(220, 280)

    image = ndimage.gaussian_filter(image, sigma=0.6 / spacing * spacing.min())  # partial volume
    image += rng.normal(scale=spec.noise_hu, size=spec.shape).astype(np.float32)

    origin = -half * np.array([-1, -1, 1]) + rng.uniform(-20, 20, size=3)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS storage, as scanners write it
    affine[:3, 3] = origin
    return image.astype(np.float32), label, affine


def generate_dataset(out: str | Path, spec: PhantomSpec = PhantomSpec()) -> Path:
    """Write ``spec.n_train + spec.n_test`` cases as an MSD dataset under ``out``.

    Does nothing when ``out`` already holds a dataset generated with the same
    spec; refuses to write into any other non-empty folder.
    """
    out = Path(out)
    marker = out / MARKER
    wanted = json.loads(json.dumps(asdict(spec)))
    if out.exists() and any(out.iterdir()):
        if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
            log.info("demo data already in %s", out)
            return out
        raise UserError(f"{out}: folder exists and is not this generator's output with these settings; "
                        "choose another --out or remove it")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    training, test = [], []
    n = spec.n_train + spec.n_test
    for index in range(n):
        image, label, affine = make_phantom(spec, index)
        split = "Tr" if index < spec.n_train else "Ts"
        name = f"case_{index:03d}.nii.gz"
        save_nifti(image, affine, out / f"images{split}" / name)
        save_nifti(label, affine, out / f"labels{split}" / name)
        entry = {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"}
        (training if split == "Tr" else test).append(entry)
        log.info("case %d/%d written", index + 1, n)

    dataset = {
        "name": "DemoCT",
        "description": "Synthetic CT-like phantoms: organ and vessels (pipeline.synthetic)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": LABELS,
        "numTraining": spec.n_train,
        "numTest": spec.n_test,
        "training": training,
        "test": test,
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2), encoding="utf-8")
    marker.write_text(json.dumps(wanted), encoding="utf-8")
    return out


def _positive_ints(values: Sequence[int], name: str) -> tuple[int, ...]:
    if any(v < 1 for v in values):
        raise UserError(f"{name} must be positive, got {tuple(values)}")
    return tuple(values)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate synthetic data: the CT demo dataset (MSD layout) or "
                                     "kidney-like slice stacks (SenNet layout, written slice by slice).")
    parser.add_argument("--kind", choices=("ct", "kidney-stack"), default="ct")
    parser.add_argument("--out", default="data/demo", help="output folder (default data/demo)")
    parser.add_argument("--train", type=int, default=PhantomSpec.n_train, help="training cases (ct)")
    parser.add_argument("--test", type=int, default=PhantomSpec.n_test, help="test cases (ct)")
    parser.add_argument("--cases", type=int, default=1, help="stacks (kidney-stack)")
    parser.add_argument("--shape", type=int, nargs=3, help="voxels per axis: rows, columns, slices "
                        f"(default {PhantomSpec.shape} for ct, {KidneySpec.shape} for kidney-stack)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    if args.kind == "kidney-stack":
        shape = _positive_ints(args.shape or KidneySpec.shape, "--shape")
        cases = _positive_ints([args.cases], "--cases")[0]
        generate_kidney_stacks(args.out, KidneySpec(shape=shape, seed=args.seed), cases)
        print(f"kidney stacks: {args.out}")
        return
    spec = PhantomSpec(
        shape=_positive_ints(args.shape or PhantomSpec.shape, "--shape"),
        n_train=_positive_ints([args.train], "--train")[0],
        n_test=args.test,
        seed=args.seed,
    )
    generate_dataset(args.out, spec)
    print(f"demo data: {args.out}")


if __name__ == "__main__":
    main()
