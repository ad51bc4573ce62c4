"""Streamed prediction: slab by slab, the same windows and blending as MONAI's whole-volume
sliding window, and a slice stack written as label slices without loading it whole."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from PIL import Image

from conftest import REPO, run_cli, smoke_args
from models3d import build_model
from pipeline.config import InferConfig, load_config
from pipeline.data.kidney import KidneySpec, generate_kidney_stacks
from pipeline.data.io import load_image
from pipeline.data.stack import SliceStack
from pipeline.evaluate.report import read_metrics_csv
from pipeline.predict import Predictor
from pipeline.evaluate.rows import evaluate_case
from pipeline.predict.stack_job import predict_stack, score_stack, stack_reader, stack_thumbnail, streamed_stack
from pipeline.predict.streamed import stream_logits, window_starts


@pytest.mark.parametrize("size, roi, overlap", [(40, 16, 0.25), (37, 16, 0.5), (16, 16, 0.5), (100, 24, 0.7), (9, 8, 0.0)])
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

    slabs = [dataclasses.replace(s, logits=s.logits.clone()) for s in stream_logits(model, read, shape, patch, infer, 3)]
    with torch.no_grad():
        whole = sliding_window_inference(volume[None], patch, 1, model, overlap=overlap, mode=blend)[0]
    assert [s.start for s in slabs] == [0] + list(np.cumsum([s.logits.shape[-1] for s in slabs])[:-1])
    streamed = torch.cat([s.logits for s in slabs], dim=-1)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=1e-5, atol=1e-5)
    assert torch.equal(streamed.argmax(0), whole.argmax(0))
    assert all(z1 - z0 == patch[2] for z0, z1 in reads)  # never more than one patch of slices in memory


def test_per_window_flips_average_the_flipped_windows():
    patch, shape = (16, 16, 8), (16, 16, 8)  # one window: per-window and whole-volume flips coincide
    model = _network(patch)
    volume = torch.randn(1, *shape)
    infer = InferConfig(tta=True, precision="fp32")
    (logits,) = [s.logits.clone() for s in stream_logits(model, lambda a, b: volume[..., a:b], shape, patch, infer, 3)]
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
    out = predict_stack(predictor, SliceStack(root / "kidney_1" / "images"), tmp_path / "pred")
    written = sorted(out.iterdir())
    assert [p.name for p in written] == [f"{z:04d}.tif" for z in range(20)]
    labels = np.stack([np.asarray(Image.open(p)) for p in written], axis=-1)
    volume = stack_reader(SliceStack(root / "kidney_1" / "images"), cfg)(0, 20)
    image = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "kidney_1" / "images").iterdir())], -1)
    np.testing.assert_allclose(volume[0].numpy(), (image - image.mean()) / image.std(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        infer = dataclasses.replace(cfg.infer)
        whole = sliding_window_inference(volume[None], (16, 16, 8), 1, model, overlap=infer.overlap, mode=infer.blend)
    assert labels.dtype == np.uint8 and np.array_equal(labels, whole[0].argmax(0).numpy())


def test_test_py_streams_a_large_stack_and_scores_it_like_the_whole_volume(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(48, 40, 24), generations=4), cases=3)
    assert run_cli(*smoke_args(root, tmp_path / "runs", "train.epochs=1")).returncode == 0
    run = (tmp_path / "runs" / "latest").resolve()
    whole = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "whole"))
    streamed = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "streamed"), "--set", "infer.stream_voxels=0")
    assert whole.returncode == 0 and streamed.returncode == 0, streamed.stderr[-800:]
    rows_whole, rows_streamed = read_metrics_csv(tmp_path / "whole" / "metrics.csv"), read_metrics_csv(tmp_path / "streamed" / "metrics.csv")
    assert [(r["case"], r["class"]) for r in rows_whole] == [(r["case"], r["class"]) for r in rows_streamed]
    for a, b in zip(rows_whole, rows_streamed):
        for metric in ("dice", "jaccard", "precision", "sensitivity", "specificity", "accuracy"):
            assert a[metric] == pytest.approx(b[metric], abs=1e-12), metric
        assert np.isnan(b["hd95"])  # not computed slab by slab yet, and counted as not finite
    case = rows_streamed[0]["case"]
    slices = sorted((tmp_path / "streamed" / "predictions" / case).iterdir())
    label_map = np.stack([np.asarray(Image.open(p)) for p in slices], axis=-1)
    assert np.array_equal(label_map, load_image(tmp_path / "whole" / "predictions" / f"{case}.nii.gz")[0])
    assert (tmp_path / "streamed" / "slices" / f"{case}.png").read_bytes().startswith(b"\x89PNG")
    refused = run_cli("test.py", "--run", str(run), "--out", str(tmp_path / "p"), "--set", "infer.stream_voxels=0",
                      "infer.probabilities=true")
    assert refused.returncode == 2 and "infer.probabilities not available for stacks" in refused.stderr


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
    streamed = score_stack(SliceStack(tmp_path / "pred"), SliceStack(labels), "k", names)
    whole = evaluate_case("k", pred.astype(np.int64), ref.astype(np.int64), names)
    assert streamed[0]["dice"] > 0.2  # the comparison has true positives to count
    for a, b in zip(streamed, whole):
        for metric in ("dice", "jaccard", "precision", "sensitivity", "specificity", "accuracy"):
            assert a[metric] == pytest.approx(b[metric], abs=1e-12), metric


def test_thumbnail_subsamples_every_axis_by_one_factor(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 21), generations=3))
    full, _ = load_image(root / "kidney_1" / "images")
    thumb, factor = stack_thumbnail(SliceStack(root / "kidney_1" / "images"), size=16)
    assert factor == 3 and np.array_equal(thumb, full[::3, ::3, ::3])


def test_only_stacks_above_the_threshold_and_at_least_one_patch_stream(tmp_path):
    root = generate_kidney_stacks(tmp_path / "stacks", KidneySpec(shape=(40, 36, 6), generations=2))
    images = root / "kidney_1" / "images"
    base = ["train.patch_size=[16,16,4]", "model.channels=[4,8]"]
    assert streamed_stack(images, load_config(REPO / "configs" / "smoke.yaml", base + ["infer.stream_voxels=0"])).shape == (40, 36, 6)
    assert streamed_stack(images, load_config(REPO / "configs" / "smoke.yaml", base)) is None  # under 2**28 voxels
    thin = load_config(REPO / "configs" / "smoke.yaml", ["infer.stream_voxels=0"])  # patch depth 16 > 6 slices
    assert streamed_stack(images, thin) is None  # the in-memory path pads it
    assert streamed_stack(tmp_path / "stacks" / "kidney_1" / "labels" / "0000.tif", thin) is None  # not a stack
