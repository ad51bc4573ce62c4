"""torchrun on the CPU (Gloo): two ranks train, test and evaluate like one process, writing once."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.torchrun]


def _torchrun(*args: str, nproc: int = 2):
    return run_cli("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args, timeout=600,
                   isolated=True)


def _checksums(stderr: str) -> dict[int, str]:
    return {int(rank): value for rank, value in re.findall(r"rank (\d)/2: parameter checksum (\S+)", stderr)}


def test_test_py_on_two_ranks_writes_the_single_process_rows(trained, tiny_dataset, tmp_path):
    run, _ = trained  # tested by one process into RUN/test
    two = _torchrun("test.py", "--run-dir", str(run), "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("mean foreground Dice") == 1
    one_csv = (run / "test" / "metrics.csv").read_text(encoding="utf-8")
    assert one_csv == (tmp_path / "two" / "metrics.csv").read_text(encoding="utf-8")
    assert len(one_csv.splitlines()) == 1 + 2 * 2  # two cases, two classes
    evaluated = _torchrun("-m", "pipeline.evaluate", "--pred", str(tmp_path / "two" / "predictions"),
                          "--ref", str(tiny_dataset / "labelsTs"), "--out", str(tmp_path / "eval"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    rows = (tmp_path / "eval" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [r.split(",")[:2] for r in one_csv.splitlines()[1:]]


def test_two_ranks_share_the_slices_of_one_large_stack_and_write_the_single_process_stack(stack_run, tmp_path):
    _, run = stack_run
    stream = ("--set", "infer.stream_voxels=0")
    assert run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "one"), *stream).returncode == 0
    two = _torchrun("test.py", "--run-dir", str(run), "--out", str(tmp_path / "two"), *stream, "-v")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("0/12 [") >= 2 and "/24 [" not in two.stderr  # each rank predicted half
    (case,) = [p.name for p in (tmp_path / "one" / "predictions").iterdir()]
    one_slices, two_slices = (sorted((tmp_path / d / "predictions" / case).iterdir()) for d in ("one", "two"))
    assert [p.name for p in one_slices] == [p.name for p in two_slices] and len(one_slices) == 24
    assert [p.read_bytes() for p in one_slices] == [p.read_bytes() for p in two_slices]
    csv = (tmp_path / "one" / "metrics.csv").read_text(encoding="utf-8")
    assert csv == (tmp_path / "two" / "metrics.csv").read_text(encoding="utf-8") and len(csv.splitlines()) == 2


def test_checkpoint_from_one_process_resumes_on_two_ranks_from_lazy_stores_built_once(stack_run, tmp_path):
    """One torchrun launch (each costs two interpreters' imports): a run trained by one process continues on
    two ranks reading crops from lazy stores, which rank 0 alone builds and writes."""
    _, trained = stack_run  # one process, one epoch, the stacks read whole
    run = Path(shutil.copytree(trained, tmp_path / trained.name))
    stores = tmp_path / "stores"
    result = _torchrun("train.py", "--resume", str(run), "--set", "train.epochs=2", "data.lazy=always",
                       f"data.store_dir={stores}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([run.name, "stores"])  # no second run folder
    assert result.stdout.count("run folder:") == 1
    assert "effective batch 4 crops per step" in result.stderr
    assert result.stderr.count("first use") == 3  # rank 0 built each store; rank 1 opened them
    assert sorted(p.name.split("-")[0] for p in stores.iterdir()) == ["kidney_1", "kidney_2", "kidney_3"]
    assert [line.split(",")[0] for line in (run / "log.csv").read_text(encoding="utf-8").splitlines()[1:]] == [
        "1", "2"]
    sums = _checksums(result.stderr)
    assert set(sums) == {0, 1} and sums[0] == sums[1]  # both ranks ran and ended with the same weights
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    checksum = sum(float(v.double().sum()) for k, v in state["model"].items()
                   if "running" not in k and "num_batches" not in k)
    assert f"{checksum:.10e}" == sums[0]  # the saved weights are the ranks' weights
