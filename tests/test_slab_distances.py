"""Surface distances and NSD read slab by slab (``evaluate/slab_distances.py``, ``distance_field.py``): equal
to the in-memory metrics and to scipy's distance transform across slab borders, and an exact percentile from
counted distances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.evaluate import slab_distances
from pipeline.evaluate.distance_field import envelope, squared_distances
from pipeline.evaluate.metrics import all_metrics, nsd, surface
from pipeline.evaluate.slab_distances import Boundary, DistanceTally
from pipeline.evaluate.slabs import tally_slabs


def _boundary(volume: np.ndarray, k: int) -> Boundary:
    return Boundary(lambda a, b: volume[..., a:b], volume.shape, k)


@pytest.mark.parametrize("thickness, tree_points", [(1, 0), (2, 5_000_000), (5, 0), (5, 5_000_000), (40, 0)])
def test_slab_metrics_equal_the_in_memory_ones_across_slab_borders(thickness, tree_points, monkeypatch):
    """Surfaces that cross slab borders, touch the volume's ends, and classes present on one side only; the
    distances from a KD-tree of the other surface, or from the distance transform (``tree_points`` 0)."""
    monkeypatch.setattr(slab_distances, "TREE_POINTS", tree_points)
    rng = np.random.default_rng(thickness)
    ref = ndimage.binary_opening(rng.random((30, 26, 23)) > 0.45).astype(np.uint8)  # blobs touching every border
    pred = ref.copy()
    pred[ndimage.binary_dilation(rng.random(ref.shape) > 0.97)] ^= 1  # speckled errors
    ref[3:9, 4:12, 10:14] = 2  # class 2 in the reference only
    spacing = (0.8, 1.1, 2.5)
    pairs = ((z, pred[..., z : z + thickness], ref[..., z : z + thickness]) for z in range(0, ref.shape[2], thickness))
    tallies = tally_slabs(pairs, [1, 2, 3])

    def boundaries(k: int) -> tuple[Boundary, Boundary]:
        return _boundary(pred, k), _boundary(ref, k)

    for k in (1, 2, 3):  # 3: empty on both sides
        expected = all_metrics(pred == k, ref == k, spacing)
        got = tallies[k].metrics(spacing, boundaries=boundaries(k))
        assert got.keys() == expected.keys() | {"pred_voxels", "ref_voxels"}
        assert (got["pred_voxels"], got["ref_voxels"]) == (np.count_nonzero(pred == k), np.count_nonzero(ref == k))
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-9, rel=0), (k, name)
    assert tallies[2].metrics(spacing)["hd"] == np.inf and tallies[3].metrics(spacing)["hd"] == 0.0
    assert tallies[2].metrics(spacing)["nsd"] == 0.0 and tallies[3].metrics(spacing)["nsd"] == 1.0
    for tolerance in (2.0, 6.0):  # reaching across slab borders; the whole-volume NSD looks offsets up (2 mm) or
        wide = tallies[1].metrics(spacing, tolerance, boundaries=boundaries(1))["nsd"]  # asks a KD-tree (6 mm)
        assert 0.2 < wide < 1 and wide == pytest.approx(nsd(pred == 1, ref == 1, spacing, tolerance), abs=1e-12)


def test_a_distance_tally_gives_numpy_s_mean_maximum_and_percentiles_without_the_distances():
    rng = np.random.default_rng(4)
    parts = [np.sqrt(rng.integers(0, 40, n)) * 0.7 for n in (1, 17, 400, 3)]  # few distinct values: many ties
    tally = DistanceTally()
    for part in parts:
        tally.add(part)
    tally.add(np.zeros(0))
    every = np.concatenate(parts)
    assert tally.n == len(every) and tally.largest == every.max()
    assert tally.total / tally.n == pytest.approx(every.mean(), rel=1e-14)
    assert len(tally.values) < 41 and tally.counts.sum() == len(every)
    for q in (0, 5, 50, 95, 99.9, 100):
        assert tally.percentile(q) == np.percentile(every, q), q
    other = DistanceTally()
    other.add(np.array([100.0, 0.35]))
    both = tally.joined(other)
    assert both.percentile(95) == np.percentile(np.concatenate([every, [100.0, 0.35]]), 95) and both.largest == 100.0


def test_the_lower_envelope_is_the_brute_force_minimum():
    rng = np.random.default_rng(7)
    g = rng.integers(0, 30, (200, 37)).astype(float) ** 2 * 0.49
    g[rng.random(g.shape) < 0.6] = np.inf  # lines with few parabolas, some with none
    g[:5] = np.inf
    g[5:9, :] = 3.0  # equal heights: ties everywhere
    q, p = np.arange(37)[:, None], np.arange(37)[None, :]
    expected = (1.7 * (q - p) ** 2 + g[:, None, :]).min(axis=2)
    assert np.array_equal(envelope(g, 1.7), expected)


@pytest.mark.parametrize("thickness", [1, 3, 16])
def test_distances_to_a_far_compact_surface_equal_scipy_s_transform(thickness):
    """A noisy prediction (surface everywhere) and a small reference near one end, anisotropic: what slows a
    KD-tree down. Every surface voxel's distance, slab by slab, equals scipy's transform of the whole
    volume, in both directions."""
    rng = np.random.default_rng(thickness)
    pred = (rng.random((31, 27, 40)) > 0.5).astype(np.uint8)
    ref = np.zeros_like(pred)
    ref[20:26, 3:9, 33:37] = 1
    spacing = (0.7, 1.3, 2.1)
    slabs = [(z, min(z + thickness, 40)) for z in range(0, 40, thickness)]
    masks = {"pred": surface(pred == 1), "ref": surface(ref == 1)}
    counts = {name: [int(m[..., a:b].sum()) for a, b in slabs] for name, m in masks.items()}
    for a, b in (("pred", "ref"), ("ref", "pred")):
        field = ndimage.distance_transform_edt(~masks[b], sampling=spacing)
        expected = np.concatenate([field[..., lo:hi][masks[a][..., lo:hi]] for lo, hi in slabs])
        got = np.sqrt(np.concatenate(list(squared_distances(
            _boundary({"pred": pred, "ref": ref}[a], 1), _boundary({"pred": pred, "ref": ref}[b], 1), slabs,
            counts[a], counts[b], spacing))))
        assert got.shape == expected.shape and np.allclose(got, expected, rtol=1e-12, atol=0), (a, b)
