"""Shared fixtures: tiny seeded datasets written to tmp paths, and a CLI runner."""

from __future__ import annotations

import os
import shutil
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
def smoke_run(tiny_dataset, tmp_path_factory) -> Path:
    """A smoke training run (configs/smoke.yaml) on ``tiny_dataset``, its run folder (read-only: copy it to
    change it)."""
    out = tmp_path_factory.mktemp("smoke_run")
    result = run_cli(*smoke_args(tiny_dataset, out))
    assert result.returncode == 0, result.stderr[-2000:]
    return (out / "latest").resolve()


@pytest.fixture(scope="session")
def trained(smoke_run, tmp_path_factory) -> tuple[Path, str]:
    """(run folder, test.py's stdout): a copy of the smoke run, tested by ``test.py --run`` into ``RUN/test``."""
    out = tmp_path_factory.mktemp("outputs")
    run = Path(shutil.copytree(smoke_run, out / smoke_run.name))
    (out / "latest").symlink_to(run.name)
    result = run_cli("test.py", "--run", str(out / "latest"))
    assert result.returncode == 0, result.stderr
    return run, result.stdout


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


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None,
            isolated: bool = False) -> subprocess.CompletedProcess:
    """Run ``python <args>`` as a user would, capturing exit code and output: in this process, as
    ``runpy`` starts scripts and ``-m`` modules (the interpreter start and the imports, ~4 s a command,
    are paid once per suite), or in a new process when ``isolated`` or given ``env`` (signals, a clean
    interpreter, environment variables read at import)."""
    if isolated or env:
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout, env=full_env)
    return _run_in_process(list(args), Path(cwd))


def _run_in_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python <args>`` by runpy in ``cwd``; global state a command may change (argv, cwd, logging,
    random generators, torch's deterministic mode and threads) is put back afterwards."""
    import contextlib
    import io
    import logging
    import random
    import runpy
    import traceback

    import numpy as np
    import torch

    target, argv = (args[1], args[2:]) if args[0] == "-m" else (args[0], args[1:])
    out, err, code = io.StringIO(), io.StringIO(), 0
    root = logging.getLogger()
    saved = (sys.argv, os.getcwd(), root.handlers[:], root.level, random.getstate(), np.random.get_state(),
             torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    root.handlers = []  # the entry point's logging.basicConfig then writes to the captured stderr
    try:
        os.chdir(cwd)
        sys.argv = [target, *argv]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if args[0] == "-m":
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(str(cwd / target), run_name="__main__")
            except SystemExit as stop:
                if isinstance(stop.code, str):
                    print(stop.code, file=sys.stderr)
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:  # noqa: BLE001 - what the interpreter would print, and its exit status
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, directory, root.handlers, level, py_state, np_state, torch_state, deterministic, threads = saved
        os.chdir(directory)
        root.setLevel(level)
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([sys.executable, *args], code, out.getvalue(), err.getvalue())


def smoke_args(data: Path, out: Path, *extra: str) -> list[str]:
    """train.py arguments for a smoke run on ``data`` writing under ``out``."""
    return ["train.py", "--config", str(REPO / "configs" / "smoke.yaml"),
            "--set", f"data.root={data}", f"output_dir={out}", *extra]
