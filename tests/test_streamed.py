"""Streamed prediction: slab by slab, the same windows and blending as MONAI's whole-volume
sliding window, and a slice stack written as label slices without loading it whole."""

from __future__ import annotations

import dataclasses
import errno
import shutil

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from PIL import Image

from conftest import REPO, run_cli
from models3d import build_model
from pipeline.config import InferConfig, load_config
from pipeline.data.kidney import KidneySpec, generate_kidney_stacks
from pipeline.data.io import load_image
from pipeline.data.stack import SliceStack, normalised_reader
from pipeline.errors import UserError
from pipeline.evaluate.metrics import DISTANCE_METRICS, OVERLAP_METRICS
from pipeline.evaluate.report import read_metrics_csv
from pipeline.evaluate.rows import evaluate_case
from pipeline.evaluate.slabs import score_stack
from pipeline.predict import Predictor
from pipeline.predict.stack_job import predict_slabs, stack_thumbnail, streamed_stack
from pipeline.predict.engines import TorchEngine
from pipeline.predict.streamed import stream_logits, window_starts


@pytest.mark.parametrize("size, roi, overlap", [(40, 16, 0.25), (37, 16, 0.5), (16, 16, 0.5), (100, 24, 0.7),
                                               (9, 8, 0.0)])
def test_window_starts_are_monais(size, roi, overlap):
    """The starts MONAI's sliding window visits along one axis: probe it with a network that
    writes each window's own first coordinate."""
    seen = set()

    def probe(window: torch.Tensor) -> torch.Tensor:
        seen.update(int(v) for v in window[:, 0, 0, 0, 0])
        return window

    volume = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1, 1).expand(1, 1, size, 1, 1).contiguous()
    sliding_window_inference(volume, (roi, 1, 1), 1, probe, overlap=overlap)
    assert window_starts(size, roi, overlap) == sorted(seen)


def _network(patch) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resunet", 1, 3, channels=(4, 8), patch_size=patch).eval()


@pytest.mark.parametrize("overlap, blend", [(0.25, "constant"), (0.5, "gaussian")])
def test_streamed_logits_equal_the_whole_volume_ones(overlap, blend):
    patch, shape = (16, 16, 8), (40, 36, 30)
    model = _network(patch)
    volume = torch.randn(1, *shape)
    infer = InferConfig(overlap=overlap, blend=blend, precision="fp32", sw_batch_size=3)
    reads = []

    def read(z0: int, z1: int) -> torch.Tensor:
        reads.append((z0, z1))
        return volume[..., z0:z1]

    engine = TorchEngine(model, None)
    slabs = [dataclasses.replace(s, logits=s.logits.clone())
             for s in stream_logits(engine, read, shape, patch, infer, 3)]
    with torch.no_grad():
        whole = sliding_window_inference(volume[None], patch, 1, model, overlap=overlap, mode=blend)[0]
    assert [s.start for s in slabs] == [0] + list(np.cumsum([s.logits.shape[-1] for s in slabs])[:-1])
    streamed = torch.cat([s.logits for s in slabs], dim=-1)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(streamed.argmax(0), whole.argmax(0))
    assert all(z1 - z0 == patch[2] for z0, z1 in reads)  # never more than one patch of slices in memory


@pytest.mark.parametrize("ranges", [[(0, 13), (13, 30)], [(0, 7), (7, 8), (8, 30)], [(5, 30)]])
def test_slice_ranges_give_exactly_the_full_pass_values(ranges):
    """Resume (from a first missing slice) and torchrun ranks (disjoint ranges) run only the windows
    reaching their slices; the values must be bit for bit those of one full pass."""
    patch, shape = (16, 16, 8), (40, 36, 30)
    model, volume = _network(patch), torch.randn(1, *shape)
    infer = InferConfig(overlap=0.5, precision="fp32", sw_batch_size=2)

    def logits(slices=None) -> torch.Tensor:
        slabs = stream_logits(TorchEngine(model, None), lambda a, b: volume[..., a:b], shape, patch, infer, 3,
                              slices=slices)
        parts = [s.logits.clone() for s in slabs]
        return torch.cat(parts, dim=-1)

    full = logits()
    for a, b in ranges:
        part = logits((a, b))
        assert part.shape[-1] == b - a
        assert torch.equal(part, full[..., a:b])


def test_per_window_flips_average_the_flipped_windows():
    patch, shape = (16, 16, 8), (16, 16, 8)  # one window: per-window and whole-volume flips coincide
    model = _network(patch)
    volume = torch.randn(1, *shape)
    infer = InferConfig(tta=True, precision="fp32")
    engine = TorchEngine(model, None)
    (logits,) = [s.logits.clone() for s in stream_logits(engine, lambda a, b: volume[..., a:b], shape, patch, infer, 3)]
    with torch.no_grad():
        flips = [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]
        expected = sum(model(volume[None].flip([d + 1 for d in f])).flip([d + 1 for d in f]) for f in flips)[0] / 8
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_a_stack_is_predicted_into_label_slices_equal_to_the_whole_volume(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 20), generations=3))
    cfg = load_config(REPO / "configs" / "smoke.yaml", ["data.modality=generic", "infer.overlap=0.5",
                                                        "train.patch_size=[16,16,8]", "model.channels=[4,8]"])
    model = _network((16, 16, 8))
    predictor = Predictor(model, cfg, {0: "background", 1: "vessel", 2: "other"})
    out = predict_slabs(predictor, SliceStack(root / "kidney_1" / "images"), tmp_path / "pred")
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{z:04d}.tif" for z in range(20)]
    labels = np.stack([np.asarray(Image.open(p)) for p in written], axis=-1)
    volume = normalised_reader(SliceStack(root / "kidney_1" / "images"), cfg.data)(0, 20)
    image = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "kidney_1" / "images").iterdir())], -1)
    np.testing.assert_allclose(volume[0].numpy(), (image - image.mean()) / image.std(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        infer = dataclasses.replace(cfg.infer)
        whole = sliding_window_inference(volume[None], (16, 16, 8), 1, model, overlap=infer.overlap, mode=infer.blend)
    assert labels.dtype == np.uint8 and np.array_equal(labels, whole[0].argmax(0).numpy())


@pytest.mark.slow
def test_test_py_streams_a_large_stack_and_scores_it_like_the_whole_volume(stack_run, tmp_path):
    _, run = stack_run
    whole = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "whole"), "--set", "infer.probabilities=true")
    streamed = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "streamed"), "--set",
                       "infer.stream_voxels=0", "infer.probabilities=true")
    assert whole.returncode == 0 and streamed.returncode == 0, streamed.stderr[-800:]
    rows_whole, rows_streamed = (read_metrics_csv(tmp_path / name / "metrics.csv") for name in ("whole", "streamed"))
    assert [(r["case"], r["class"]) for r in rows_whole] == [(r["case"], r["class"]) for r in rows_streamed]
    for a, b in zip(rows_whole, rows_streamed):
        for metric in (*OVERLAP_METRICS, "nsd", *DISTANCE_METRICS):
            assert a[metric] == pytest.approx(b[metric], abs=1e-9), metric
    case = rows_streamed[0]["case"]
    slices = sorted((tmp_path / "streamed" / "predictions" / case).iterdir())
    label_map = np.stack([np.asarray(Image.open(p)) for p in slices], axis=-1)
    assert np.array_equal(label_map, load_image(tmp_path / "whole" / "predictions" / f"{case}.nii.gz")[0])
    prob_slices = sorted((tmp_path / "streamed" / "probabilities" / case / "class_1").iterdir())
    prob = np.stack([np.asarray(Image.open(p)) for p in prob_slices], axis=-1)
    whole_prob = load_image(tmp_path / "whole" / "probabilities" / f"{case}.nii.gz")[0][..., 0]  # (H, W, D) class 1
    assert prob.dtype == np.float32 and prob.shape == whole_prob.shape and 0 < prob.max() <= 1
    np.testing.assert_allclose(prob, whole_prob, atol=1e-5)
    assert (tmp_path / "streamed" / "slices" / f"{case}.png").read_bytes().startswith(b"\x89PNG")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / case).symlink_to(stack_run[0] / case)  # the SenNet case folder, labels/ inside
    evaluated = run_cli("-m", "pipeline.evaluate", "--pred", str(tmp_path / "streamed" / "predictions"),
                        "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "eval"), "--labels", "1")
    assert evaluated.returncode == 0, evaluated.stderr[-800:]
    (row,) = read_metrics_csv(tmp_path / "eval" / "metrics.csv")
    for metric in ("dice", "hd95", "asd"):
        assert row[metric] == pytest.approx(rows_streamed[0][metric], abs=1e-9)
    refused = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "p"), "--set", "infer.stream_voxels=0",
                      "infer.auc=true")
    assert refused.returncode == 2 and "infer.auc not available for volumes predicted slab by slab" in refused.stderr


def test_stack_scores_counted_slab_by_slab_equal_the_whole_volume_rows(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 37), generations=4))
    labels = root / "kidney_1" / "labels"
    ref, _ = load_image(labels, label=True)
    pred = np.roll(ref, 2, axis=0) * 2  # off by two rows, and as class 2
    pred[ref > 0] = np.where(np.arange(int((ref > 0).sum())) % 3 == 0, 1, pred[ref > 0])  # a third right as class 1
    (tmp_path / "pred").mkdir()
    for z in range(pred.shape[2]):
        Image.fromarray(pred[..., z].astype(np.uint8)).save(tmp_path / "pred" / f"{z:04d}.tif")
    names = {0: "background", 1: "vessel", 2: "other"}
    spacing = (0.7, 0.7, 2.0)
    streamed = score_stack(SliceStack(tmp_path / "pred"), SliceStack(labels), "k", names, spacing)
    whole = evaluate_case("k", pred.astype(np.int64), ref.astype(np.int64), names, spacing)
    assert streamed[0]["dice"] > 0.2 and 0 < streamed[0]["hd"] < np.inf  # true positives and surfaces to compare
    for a, b in zip(streamed, whole):
        for metric in (*OVERLAP_METRICS, "nsd", *DISTANCE_METRICS):
            assert a[metric] == pytest.approx(b[metric], abs=1e-9), metric


def test_thumbnail_subsamples_every_axis_by_one_factor(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 21), generations=3))
    full, _ = load_image(root / "kidney_1" / "images")
    thumb, factor = stack_thumbnail(SliceStack(root / "kidney_1" / "images"), size=16)
    assert factor == 3 and np.array_equal(thumb, full[::3, ::3, ::3])


def test_only_stacks_above_the_threshold_and_at_least_one_patch_stream(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 6), generations=2))
    images = root / "kidney_1" / "images"
    base = ["train.patch_size=[16,16,4]", "model.channels=[4,8]"]
    streamed_cfg = load_config(REPO / "configs" / "smoke.yaml", base + ["infer.stream_voxels=0"])
    assert streamed_stack(images, streamed_cfg).shape == (40, 36, 6)
    assert streamed_stack(images, load_config(REPO / "configs" / "smoke.yaml", base)) is None  # under 2**28 voxels
    thin = load_config(REPO / "configs" / "smoke.yaml", ["infer.stream_voxels=0"])  # patch depth 16 > 6 slices
    assert streamed_stack(images, thin) is None  # the in-memory path pads it
    assert streamed_stack(tmp_path / "stacks" / "kidney_1" / "labels" / "0000.tif", thin) is None  # not a stack


def _label_slices(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_a_killed_streamed_test_resumes_without_redoing_finished_slices(stack_run, tmp_path, monkeypatch):
    root, run = stack_run
    full = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "full"), "--set", "infer.stream_voxels=0")
    assert full.returncode == 0, full.stderr[-800:]
    (case,) = [p.name for p in (tmp_path / "full" / "predictions").iterdir()]  # the run's test split
    predictor = Predictor.from_run(run, "best", ["infer.stream_voxels=0"])
    stack = SliceStack(root / case / "images")
    out = tmp_path / "killed" / "predictions" / case
    from pipeline.predict import stack_job

    written = []
    real_write = stack_job._write_slice

    def write_then_die(path, plane, done, total):
        if len(written) == 9:
            raise KeyboardInterrupt  # killed after nine slices
        written.append(path.name)
        real_write(path, plane, done, total)

    monkeypatch.setattr(stack_job, "_write_slice", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        predict_slabs(predictor, stack, out)
    assert sorted(p.name for p in out.iterdir()) == written  # whole slices only, no temporary left
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    written.clear()
    monkeypatch.setattr(stack_job, "_write_slice", real_write)
    resumed = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "killed"), "--resume",
                      "--set", "infer.stream_voxels=0")
    assert resumed.returncode == 0, resumed.stderr[-800:]
    assert "9 of 24 slices already written, predicting the other 15" in resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in kept} == kept  # not redone
    assert _label_slices(out) == _label_slices(tmp_path / "full" / "predictions" / case)
    assert (tmp_path / "killed" / "metrics.csv").read_text() == (tmp_path / "full" / "metrics.csv").read_text()


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_keeps_the_finished_slices(stack_run, tmp_path, monkeypatch):
    root, run = stack_run
    predictor = Predictor.from_run(run, "best", ["infer.stream_voxels=0"])
    stack = SliceStack(root / "kidney_1" / "images")
    from pipeline.predict import stack_job

    real = stack_job.atomic_write
    calls = []

    def fill_up(path, write):
        calls.append(path)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(stack_job, "atomic_write", fill_up)
    with pytest.raises(UserError, match=r"0005.tif: disk full while writing predictions \(5 of 24 slices written and "
                                        r"kept\); free space and rerun the same command with --resume"):
        predict_slabs(predictor, stack, tmp_path / "pred")
    assert len(list((tmp_path / "pred").iterdir())) == 5
    monkeypatch.setattr(stack_job.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(UserError, match=r"the predictions need about 0.00 GB, only 0.00 GB free"):
        predict_slabs(predictor, stack, tmp_path / "other")
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
