"""Shared fixtures: tiny seeded datasets written to tmp paths, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data.synthetic import PhantomSpec, generate_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
TINY = PhantomSpec(shape=(48, 48, 24), n_train=4, n_test=2, seed=3)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """An MSD dataset of 4 + 2 phantoms of 48 x 48 x 24 voxels (read-only: copy before changing it)."""
    return generate_dataset(tmp_path_factory.mktemp("data") / "tiny", TINY)


@pytest.fixture(scope="session")
def stack_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset root, run folder): three generated kidney stacks of 48 x 40 x 24 in the SenNet layout
    and a one-epoch smoke run trained on them (read-only)."""
    from pipeline.data.kidney import KidneySpec, generate_kidney_stacks

    base = tmp_path_factory.mktemp("stack_run")
    root = generate_kidney_stacks(base / "stacks", KidneySpec(shape=(48, 40, 24), generations=4), cases=3)
    trained = run_cli(*smoke_args(root, base / "runs", "train.epochs=1"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    return root, (base / "runs" / "latest").resolve()


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python <args>`` like a user would, capturing output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=full_env)


def smoke_args(data: Path, out: Path, *extra: str) -> list[str]:
    """train.py arguments for a smoke run on ``data`` writing under ``out``."""
    return ["train.py", "--config", str(REPO / "configs" / "smoke.yaml"),
            "--set", f"data.root={data}", f"output_dir={out}", *extra]
