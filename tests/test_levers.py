"""The quality levers: test-time flips, CLAHE, random rotation/scaling, the error figure."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.exposure import equalize_adapthist

from pipeline.config import InferConfig, TrainConfig
from pipeline.data.transforms import IMAGE, LABEL, clahe, clahe_tensor, intensity_transforms, random_affine
from pipeline.evaluate.figures import error_figure
from pipeline.predict.engines import TorchEngine
from pipeline.predict.sliding import flip_dims, predict_volume


def test_flip_dims_cover_every_subset_of_the_patch_axes():
    assert flip_dims((64, 64, 64), tta=False) == [()]
    assert sorted(flip_dims((64, 64, 32), tta=True)) == sorted(
        dims for r in range(4) for dims in itertools.combinations((2, 3, 4), r))
    assert flip_dims((128, 128, 1), tta=True) == [(), (2,), (3,), (2, 3)]  # the single slice is never flipped


def test_tta_is_the_mean_of_the_flipped_predictions():
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 2, 3, padding=1)  # not flip-invariant: random weights
    image = torch.randn(1, 1, 8, 8, 4)
    infer = InferConfig(tta=True, precision="fp32")
    got = predict_volume(TorchEngine(model, None), image, (8, 8, 4), infer)  # one window: no blending involved
    with torch.no_grad():
        expected = sum(model(image.flip(d)).flip(d) if d else model(image) for d in flip_dims((8, 8, 4), True)) / 8
        plain = model(image)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain, atol=1e-3)  # the flips did change the result
    fp32 = InferConfig(precision="fp32")
    torch.testing.assert_close(predict_volume(TorchEngine(model, None), image, (8, 8, 4), fp32), plain)


def test_clahe_matches_scikit_image_per_slice():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2, 64, 48, 3)).astype(np.float32)
    image[1, ..., 2] = 7.0  # a constant slice
    out = clahe(image)
    assert out.shape == image.shape and out.dtype == np.float32
    plane = image[0, ..., 1]
    expected = equalize_adapthist((plane - plane.min()) / (plane.max() - plane.min()), clip_limit=0.01)
    np.testing.assert_allclose(out[0, ..., 1], expected, atol=1e-6)
    assert np.all(out[1, ..., 2] == 0)
    assert 0 <= out.min() and out.max() <= 1
    tensor = clahe_tensor(torch.from_numpy(image))
    np.testing.assert_allclose(tensor.numpy(), out)


@pytest.mark.parametrize("patch, rotated_about, scaled", [
    ((32, 32, 1), [False, False, True], [True, True, False]),
    ((32, 32, 16), [True, True, True], [True, True, True]),
])
def test_random_affine_stays_in_the_patch_planes(patch, rotated_about, scaled):
    t = random_affine(patch, prob=1.0, degrees=20, scale=0.2)
    grid = t.rand_affine.rand_affine_grid
    assert [r != 0 for r in np.ravel(grid.rotate_range)] == rotated_about
    assert [s != 0 for s in np.ravel(grid.scale_range)] == scaled
    t.set_random_state(0)
    label = torch.zeros(1, *patch)
    label[:, 8:24, 8:24] = 1
    data = {IMAGE: torch.arange(label.numel(), dtype=torch.float32).reshape(label.shape), LABEL: label}
    out = t(data)
    assert out[IMAGE].shape == label.shape and out[LABEL].shape == label.shape
    assert set(np.unique(out[LABEL].numpy())) <= {0.0, 1.0}  # nearest for the label
    assert not torch.equal(out[IMAGE].as_tensor(), data[IMAGE])  # it did transform


@pytest.mark.parametrize("patch", [(16, 16, 8), (32, 32, 1)])
def test_each_intensity_augmentation_changes_the_image_as_nnunet_does(patch):
    """Each transform alone at probability 1: the label is untouched, the image changes the way the key says,
    and a single-slice patch is never mixed across its flat axis (blur, low resolution)."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.standard_normal((1, *patch), dtype=np.float32))
    label = (image > 0).float()
    keys = ["noise_prob", "blur_prob", "intensity_prob", "contrast_prob", "low_res_prob", "gamma_prob"]
    for key in keys:
        steps = intensity_transforms(TrainConfig(patch_size=patch, **{key: 1.0}))
        assert len(steps) == (2 if key == "intensity_prob" else 1)
        out = {IMAGE: image.clone(), LABEL: label.clone()}
        for step in steps:
            step.set_random_state(1)
            out = step(out)
        got = torch.as_tensor(out[IMAGE])
        assert torch.equal(torch.as_tensor(out[LABEL]), label) and got.shape == image.shape
        assert not torch.allclose(got, image), key
        if key == "noise_prob":
            assert 0 < float((got - image).std()) <= 0.1
        if key == "contrast_prob":  # about the mean, within the old range
            assert abs(float(got.mean() - image.mean())) < 1e-4 and got.min() >= image.min() - 1e-5
        if key in ("blur_prob", "low_res_prob"):
            assert float(got.std()) < float(image.std())  # smoothed: white noise loses variance
    assert intensity_transforms(TrainConfig(patch_size=patch)) == []  # off by default


def test_error_figure_draws_one_row_per_case(tmp_path):
    label = np.zeros((40, 30, 1), np.uint8)
    label[10:20, 5:25] = 1
    pred = np.roll(label, 3, axis=0)
    image = np.random.default_rng(0).random((40, 30, 1))
    out = tmp_path / "errors.png"
    error_figure([("a", image, label, pred, np.eye(4)), ("b", image, label, label, np.eye(4))], out)
    with Image.open(out) as png:
        width, height = png.size
    assert png.format == "PNG" and height > width * 0.4  # two rows of four panels
    one = tmp_path / "one.png"
    error_figure([("a", image, label, pred, np.eye(4))], one)
    with Image.open(one) as png:
        assert png.size[1] < height * 0.7


def test_error_figure_crop_window_is_centred_on_the_label():
    from pipeline.evaluate.figures import _crop_window
    plane = np.zeros((100, 80))
    plane[60:70, 10:20] = 1
    rows, cols = _crop_window(plane, 20)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (54, 74, 4, 24)  # centre (64.5, 14.5) rounds to even
    rows, cols = _crop_window(plane, 50)  # clipped at the border, still 50 wide
    assert (cols.start, cols.stop) == (0, 50) and rows.stop - rows.start == 50
    assert _crop_window(plane, None) == (slice(None), slice(None))


def _real_data_script():
    path = Path(__file__).parents[1] / "benchmarks" / "real_data.py"
    spec = importlib.util.spec_from_file_location("real_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_holds_out_the_seeded_draw_or_the_named_cases():
    real_data = _real_data_script()
    ids = [f"case{i}" for i in range(10)]
    drawn = real_data.held_out(ids, 4, seed=0)
    order = np.random.default_rng(0).permutation(10)
    assert drawn == sorted(ids[i] for i in order[:4])  # the pipeline's own seeded draw
    assert real_data.held_out(ids, 4, 0, ["case7", "case2"]) == ["case2", "case7"]
    with pytest.raises(ValueError, match="unknown case id\\(s\\) nope"):
        real_data.held_out(ids, 4, 0, ["case1", "nope"])


def test_accuracy_ceiling_matches_counted_predictions():
    real_data = _real_data_script()
    ref = np.zeros(1000, bool)
    ref[:120] = True  # 12 % foreground
    no_fp = np.zeros(1000, bool)
    no_fp[:90] = True  # 90 true positives, 30 false negatives, no false positives
    balanced = np.zeros(1000, bool)
    balanced[:100] = True
    balanced[200:220] = True  # 100 TP, 20 FN, 20 FP
    for pred, which in ((no_fp, 0), (balanced, 1)):
        tp = np.count_nonzero(pred & ref)
        dice = 2 * tp / (pred.sum() + ref.sum())
        accuracy = np.mean(pred == ref)
        assert real_data.accuracy_ceiling(dice, 0.12)[which] == pytest.approx(accuracy, abs=1e-12)
