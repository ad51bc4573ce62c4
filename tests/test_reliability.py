"""Killed runs resume losing nothing; hostile inputs never run code or take the machine down."""

from __future__ import annotations

import csv
import inspect
import os
import resource
import shutil
import signal
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.inferers.utils import sliding_window_inference
from PIL import Image

from conftest import run_cli, smoke_args
from signalling import run_and_sigterm, start_and_signal
from pipeline.config import InferConfig
from pipeline.yamlfile import read_yaml
from pipeline.errors import UserError
from pipeline.predict.engines import TorchEngine
from pipeline.predict.sliding import predict_volume
from pipeline.data.io import load_image

# 5 volumes per epoch from 3 training cases: each epoch is a permutation and 2 more draws, which a resumed
# epoch must replay exactly
DETERMINISTIC = ("train.deterministic=true", "train.precision=fp32", "infer.precision=fp32", "train.epochs=3",
                 "train.volumes_per_epoch=5")


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _epochs_logged(run: Path) -> list[int]:
    with open(run / "log.csv", newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    result = run_cli(*smoke_args(tiny_dataset, out, *DETERMINISTIC))
    assert result.returncode == 0, result.stderr
    return _weights((out / "latest").resolve())


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_gives_the_uninterrupted_weights(tiny_dataset, tmp_path, uninterrupted):
    """SIGTERM saves the exact step; the resumed run killed mid-epoch with SIGKILL (no chance to save) resumes
    again from its last checkpoint; the weights at the end are the uninterrupted run's, bit for bit."""
    stopped = run_and_sigterm(smoke_args(tiny_dataset, tmp_path, *DETERMINISTIC), tmp_path / "latest", 1)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "interrupted: stopped in epoch" in stopped.stderr and "--resume" in stopped.stderr
    run = (tmp_path / "latest").resolve()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["partial"] is not None and state["partial"]["step"] >= 1

    proc = start_and_signal(["train.py", "--resume", str(run)], run, signal.SIGKILL, after_epoch=2, delay=0.3)
    assert proc.returncode == -signal.SIGKILL
    assert _epochs_logged(run)[-1] < 3  # really killed before the end
    resumed = run_cli("train.py", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs_logged(run) == [1, 2, 3]
    _assert_same(_weights(run), uninterrupted)


@pytest.mark.slow
def test_damaged_last_checkpoint_falls_back_to_the_previous_one(smoke_run, tmp_path):
    run = Path(shutil.copytree(smoke_run, tmp_path / smoke_run.name))  # 2 epochs
    last = run / "checkpoints" / "last.pt"
    assert (run / "checkpoints" / "last.prev.pt").is_file()
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write that died halfway
    resumed = run_cli("train.py", "--resume", str(run), "--set", "train.epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the previous checkpoint last.prev.pt" in resumed.stderr
    assert _epochs_logged(run) == [1, 2, 3]
    assert torch.load(last, weights_only=True)["epoch"] == 3


class _Plant:
    """Unpickling this would run ``touch`` (what a hostile checkpoint does)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.slow
def test_hostile_checkpoint_never_runs_code(smoke_run, tmp_path, monkeypatch):
    marker = tmp_path / "planted"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Plant(marker), "config": {}}, evil)
    run = shutil.copytree(smoke_run, tmp_path / "run")
    for force_unsafe in ("0", "1"):  # torch.load reads the variable at each call
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", force_unsafe)
        result = run_cli("test.py", "--run", str(run), "--checkpoint", str(evil))
        assert result.returncode == 2 and "evil.pt: not a loadable checkpoint" in result.stderr
        assert "Traceback" not in result.stderr
        assert not marker.exists()


def _samples(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {}
    volume = rng.normal(size=(24, 24, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "a.nii")
    for suffix in (".mha", ".nrrd"):
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / f"a{suffix}"))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["image"] = volume
    for suffix in (".png", ".tif", ".gif"):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / f"a{suffix}")
    for path in tmp_path.iterdir():
        files[path.name] = path
    return files


def _variants(data: bytes, rng: np.random.Generator) -> dict[str, bytes]:
    flipped = bytearray(data)
    for i in rng.integers(0, len(data), size=24):
        flipped[i] ^= 0xFF
    return {"truncated": data[: len(data) // 2], "flipped": bytes(flipped), "empty": b"", "head": data[:64],
            "not-gzip": b"\x1f\x8b\x08\x00" + bytes(rng.integers(0, 255, 300, dtype=np.uint8))}


def test_corrupted_inputs_of_every_format_end_in_a_clear_error(tmp_path):
    rng = np.random.default_rng(1)
    originals = _samples(tmp_path / "orig" if (tmp_path / "orig").mkdir() is None else tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = []
    for name, path in originals.items():
        for kind, content in _variants(path.read_bytes(), rng).items():
            bad = tmp_path / "bad" / kind / name
            bad.parent.mkdir(parents=True, exist_ok=True)
            bad.write_bytes(content)
            start = time.perf_counter()
            try:
                load_image(bad)
                outcomes.append("read")  # flipped pixel bytes can still be a valid image
            except UserError as err:
                assert bad.name in str(err)
                outcomes.append("error")
            assert time.perf_counter() - start < 1.0, (kind, name)
    assert outcomes.count("error") >= len(originals) * 3  # at least truncated, empty, head fail everywhere
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20 < 1.0  # GB (ru_maxrss in kB)


def test_yaml_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model: !!python/object/new:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(UserError, match="invalid YAML"):
        read_yaml(path)


def test_links_out_of_the_root_are_refused(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    outside = tmp_path / "outside.nii.gz"
    shutil.copy(root / "imagesTr" / "case_000.nii.gz", outside)
    (root / "imagesTr" / "case_000.nii.gz").unlink()
    (root / "imagesTr" / "case_000.nii.gz").symlink_to(outside)
    result = run_cli(*smoke_args(root, tmp_path / "out"))
    assert result.returncode == 2 and "outside the dataset root" in result.stderr


@pytest.mark.slow
def test_all_background_training_case_trains_to_the_end(tiny_dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    label = nib.load(root / "labelsTr" / "case_001.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine), root / "labelsTr" / "case_001.nii.gz")
    result = run_cli(*smoke_args(root, tmp_path / "out", "train.epochs=2", "data.val_cases=[case_000]"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("all background") == 1 and "case_001.nii.gz" in result.stderr
    assert "Num foregrounds 0" not in result.stderr
    assert _epochs_logged((tmp_path / "out" / "latest").resolve()) == [1, 2]


class _OnTheGpu(torch.Tensor):
    """A CPU tensor that says it lies on a GPU, so the stitching takes its GPU path on this machine."""

    @property
    def is_cuda(self) -> bool:
        return True


def test_out_of_memory_while_stitching_retries_buffered_then_on_the_cpu(monkeypatch, caplog):
    calls, signature = [], inspect.signature(sliding_window_inference)

    def fake(*args, **kwargs):
        call = signature.bind(*args, **kwargs).arguments
        calls.append((torch.device(call["device"]).type, call.get("buffer_steps")))
        if len(calls) < 3:
            raise torch.OutOfMemoryError("CUDA out of memory (mocked)")
        return torch.ones(1, 2, *call["inputs"].shape[2:])

    monkeypatch.setattr("monai.inferers.inferer.sliding_window_inference", fake)
    image = torch.zeros(1, 1, 8, 8, 8).as_subclass(_OnTheGpu)
    logits = predict_volume(TorchEngine(torch.nn.Conv3d(1, 2, 1), None), image, (8, 8, 8), InferConfig(tta=False))
    assert torch.equal(logits, torch.ones(1, 2, 8, 8, 8))
    assert calls == [("cpu", None), ("cpu", 1), ("cpu", None)]  # on the input's device, buffered, then CPU
    assert "GPU stitching failed" in caplog.text and "attempting on CPU" in caplog.text


@pytest.mark.slow
def test_resume_with_another_architecture_is_a_clear_error(smoke_run, tmp_path):
    run = Path(shutil.copytree(smoke_run, tmp_path / smoke_run.name))  # 2 epochs
    result = run_cli("train.py", "--resume", str(run), "--set", "model.name=unet", "train.epochs=3")
    assert result.returncode == 2 and "a resumed run keeps those" in result.stderr and "Traceback" not in result.stderr
    assert _epochs_logged(run) == [1, 2]


def test_too_little_disk_room_is_refused_before_training(monkeypatch, tmp_path):
    import shutil as shutil_module

    from pipeline.checkpoint import check_room

    full = shutil_module._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: full)
    model = torch.nn.Conv3d(1, 8, 3)
    with pytest.raises(UserError, match="MB free, training needs about"):
        check_room(tmp_path, model)


@pytest.mark.slow
def test_stopped_test_and_evaluation_redo_only_missing_cases(trained, tiny_dataset, tmp_path):
    run = Path(shutil.copytree(trained[0], tmp_path / trained[0].name))  # tested by test.py into RUN/test
    complete = (run / "test" / "metrics.csv").read_text(encoding="utf-8")
    # as if killed while on case_005: its record and outputs are missing
    for stale in ("cases/case_005.json", "predictions/case_005.nii.gz", "metrics.csv", "summary.json"):
        (run / "test" / stale).unlink()
    before = (run / "test" / "predictions" / "case_004.nii.gz").stat().st_mtime_ns
    resumed = run_cli("test.py", "--run", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 of 2 cases already done" in resumed.stderr
    assert (run / "test" / "predictions" / "case_004.nii.gz").stat().st_mtime_ns == before  # not redone
    assert (run / "test" / "metrics.csv").read_text(encoding="utf-8") == complete

    out = tmp_path / "eval"
    args = ["-m", "pipeline.evaluate", "--pred", str(run / "test" / "predictions"),
            "--ref", str(tiny_dataset / "labelsTs"), "--out", str(out), "--workers", "1"]
    assert run_cli(*args).returncode == 0
    first = (out / "metrics.csv").read_text(encoding="utf-8")
    (out / "cases" / "case_004.json").unlink()
    assert "not empty" in run_cli(*args).stderr  # never silently over an earlier evaluation
    again = run_cli(*args, "--resume")
    assert again.returncode == 0, again.stderr
    assert (out / "metrics.csv").read_text(encoding="utf-8") == first
