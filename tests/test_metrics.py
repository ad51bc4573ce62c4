"""Metrics against medpy.metric.binary (the reference) and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy
from monai.metrics import compute_roc_auc
from scipy import ndimage

from pipeline import metrics


def _random_pair(rng: np.random.Generator, kind: str, ndim: int):
    shape = (40, 36, 20) if ndim == 3 else (64, 56)
    def blob():
        seeds = rng.random(shape) > 0.995
        return ndimage.binary_dilation(seeds, iterations=int(rng.integers(1, 4)))
    def tube():
        mask = np.zeros(shape, bool)
        t = np.linspace(0, 1, 200)
        start, end = rng.random(ndim) * shape, rng.random(ndim) * shape
        points = np.round(start + t[:, None] * (end - start)).astype(int).clip(0, np.array(shape) - 1)
        mask[tuple(points.T)] = True
        width = int(rng.integers(0, 2))  # SciPy's iterations=0 dilates until nothing changes: the whole volume
        return ndimage.binary_dilation(mask, iterations=width) if width else mask
    def single():
        mask = np.zeros(shape, bool)
        mask[tuple(rng.integers(0, s) for s in shape)] = True
        return mask
    def border():
        mask = blob()
        mask[(slice(0, 3),) + (slice(None),) * (ndim - 1)] = True  # touches the volume border
        return mask
    make = {"blob": blob, "tube": tube, "single": single, "border": border}[kind]
    pred, ref = make(), make()
    if not pred.any():
        pred[(0,) * ndim] = True
    if not ref.any():
        ref[(-1,) * ndim] = True
    return pred, ref


CASES = list(itertools.product(["blob", "tube", "single", "border"], [2, 3], [None, "iso", "aniso"], range(3)))


@pytest.mark.parametrize("kind, ndim, spacing_kind, seed", CASES)
def test_distances_equal_medpy(kind, ndim, spacing_kind, seed):
    rng = np.random.default_rng([seed, ndim, len(kind)])
    pred, ref = _random_pair(rng, kind, ndim)
    spacing = {None: None, "iso": 1.5, "aniso": (0.7, 0.7, 2.5)[-ndim:]}[spacing_kind]
    ours = metrics.surface_distance_metrics(pred, ref, spacing)
    expected = {
        "asd": medpy.asd(pred, ref, spacing),
        "assd": medpy.assd(pred, ref, spacing),
        "hd95": medpy.hd95(pred, ref, spacing),
        "hd": medpy.hd(pred, ref, spacing),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, rel=1e-6, abs=1e-12), name
        assert getattr(metrics, name)(pred, ref, spacing) == pytest.approx(value, rel=1e-6, abs=1e-12), name


def test_the_random_cases_are_fifty_distinct_non_trivial_pairs():
    """Every case compares two different non-empty masks (a pair with pred == ref would pass any distance
    code with 0), and no two cases draw the same pair."""
    seen = set()
    for kind, ndim, _, seed in CASES:
        pred, ref = _random_pair(np.random.default_rng([seed, ndim, len(kind)]), kind, ndim)
        assert pred.any() and ref.any() and (pred != ref).any(), (kind, ndim, seed)
        seen.add((pred.tobytes(), ref.tobytes()))
    assert len(seen) == len(CASES) // 3 and len(CASES) >= 50  # the spacings reuse each pair


@pytest.mark.parametrize("seed", range(6))
def test_overlap_metrics_equal_medpy(seed):
    rng = np.random.default_rng(seed)
    pred, ref = _random_pair(rng, "blob", 3)
    assert metrics.dice(pred, ref) == pytest.approx(medpy.dc(pred, ref), rel=1e-12)
    assert metrics.jaccard(pred, ref) == pytest.approx(medpy.jc(pred, ref), rel=1e-12)
    assert metrics.precision(pred, ref) == pytest.approx(medpy.precision(pred, ref), rel=1e-12)
    assert metrics.sensitivity(pred, ref) == pytest.approx(medpy.sensitivity(pred, ref), rel=1e-12)
    assert metrics.specificity(pred, ref) == pytest.approx(medpy.specificity(pred, ref), rel=1e-12)


def test_hand_computed_two_dimensional_case():
    ref = np.zeros((10, 10), bool)
    ref[2:6, 2:6] = True  # 16 pixels
    pred = np.zeros((10, 10), bool)
    pred[2:6, 4:8] = True  # 16 pixels, 8 shared
    assert metrics.dice(pred, ref) == pytest.approx(0.5)
    assert metrics.jaccard(pred, ref) == pytest.approx(8 / 24)
    assert metrics.accuracy(pred, ref) == pytest.approx(84 / 100)
    # shifted by 2 columns: the farthest surface pixel is 2 pixels away, times the spacing
    assert metrics.hd(pred, ref, spacing=(1.0, 3.0)) == pytest.approx(6.0)


EMPTY_TABLE = [
    # pred empty?, ref empty?, dice, jaccard, distance
    (True, True, 1.0, 1.0, 0.0),
    (True, False, 0.0, 0.0, math.inf),
    (False, True, 0.0, 0.0, math.inf),
]


@pytest.mark.parametrize("pred_empty, ref_empty, dice, jaccard, distance", EMPTY_TABLE)
def test_empty_masks(pred_empty, ref_empty, dice, jaccard, distance):
    full = np.zeros((8, 8, 8), bool)
    full[2:5, 2:5, 2:5] = True
    pred = np.zeros_like(full) if pred_empty else full
    ref = np.zeros_like(full) if ref_empty else full
    assert metrics.dice(pred, ref) == dice
    assert metrics.jaccard(pred, ref) == jaccard
    for name, value in metrics.surface_distance_metrics(pred, ref, (1, 1, 2)).items():
        assert value == distance, name


def test_mask_restricts_every_metric():
    ref = np.zeros((20, 20), bool)
    ref[5:10, 5:10] = True
    pred = ref.copy()
    pred[15:18, 15:18] = True  # a false positive outside the field of view
    fov = np.zeros_like(ref)
    fov[:12, :12] = True
    assert metrics.dice(pred, ref) < 1
    assert metrics.dice(pred, ref, mask=fov) == 1.0
    assert metrics.hd(pred, ref, mask=fov) == 0.0
    assert metrics.accuracy(pred, ref, mask=fov) == 1.0


def test_roc_auc_equals_pairwise_definition():
    rng = np.random.default_rng(0)
    ref = rng.random(300) > 0.6
    prob = np.round(np.where(ref, rng.normal(0.7, 0.2, 300), rng.normal(0.4, 0.2, 300)), 1)  # many ties
    pos, neg = prob[ref], prob[~ref]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert metrics.roc_auc(prob, ref) == pytest.approx(pairwise, rel=1e-12)
    monai_auc = compute_roc_auc(torch.as_tensor(prob), torch.as_tensor(ref, dtype=torch.float64))
    assert metrics.roc_auc(prob, ref) == pytest.approx(monai_auc, rel=1e-12)  # MONAI counts ties half too
    assert metrics.roc_auc(ref.astype(float), ref) == 1.0
    assert math.isnan(metrics.roc_auc(prob, np.zeros(300, bool)))


def test_shape_mismatch_and_bad_spacing_raise():
    a = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match="differs"):
        metrics.dice(a, np.ones((4, 4, 5), bool))
    with pytest.raises(ValueError, match="spacing must be 3 positive numbers"):
        metrics.hd95(a, a, spacing=(1.0, 0.0, 1.0))
