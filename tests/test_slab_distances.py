"""Surface distances and NSD read slab by slab (``evaluate/slab_distances.py``): equal to the in-memory
metrics across slab borders and KD-tree chunks, and an exact percentile from counted distances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.evaluate import slab_distances
from pipeline.evaluate.metrics import all_metrics, nsd
from pipeline.evaluate.slab_distances import Boundary, DistanceTally
from pipeline.evaluate.slabs import tally_slabs


@pytest.mark.parametrize("thickness, chunk_points", [(1, 60), (2, 20_000_000), (5, 60), (5, 20_000_000),
                                                     (40, 20_000_000)])
def test_slab_metrics_equal_the_in_memory_ones_across_slab_borders(thickness, chunk_points, monkeypatch):
    """Surfaces that cross slab borders, touch the volume's ends, and classes present on one side only; the
    surface in one KD-tree, or in trees of 60 voxels asked nearest first."""
    monkeypatch.setattr(slab_distances, "CHUNK_POINTS", chunk_points)
    rng = np.random.default_rng(thickness)
    ref = ndimage.binary_opening(rng.random((30, 26, 23)) > 0.45).astype(np.uint8)  # blobs touching every border
    pred = ref.copy()
    pred[ndimage.binary_dilation(rng.random(ref.shape) > 0.97)] ^= 1  # speckled errors
    ref[3:9, 4:12, 10:14] = 2  # class 2 in the reference only
    spacing = (0.8, 1.1, 2.5)
    pairs = ((z, pred[..., z : z + thickness], ref[..., z : z + thickness]) for z in range(0, ref.shape[2], thickness))
    tallies = tally_slabs(pairs, [1, 2, 3])

    def boundaries(k: int) -> tuple[Boundary, Boundary]:
        return tuple(Boundary(lambda a, b, v=v: v[..., a:b], ref.shape[2], k) for v in (pred, ref))

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
