"""NSD against DeepMind's ``surface-distance`` (the reference), clDice against its paper's definition and a
hand-computed case, the empty-mask table, and the options that choose what a report holds."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import surface_distance
from scipy import ndimage
from skimage.morphology import skeletonize
from surface_distance import lookup_tables

from conftest import run_cli
from pipeline import metrics
from pipeline.config import REPORT_METRICS, load_config
from pipeline.data.writers import save_nifti
from pipeline.errors import UserError
from pipeline.evaluate import surface_dice
from pipeline.evaluate.report import read_metrics_csv, write_metrics_csv
from pipeline.evaluate.rows import MetricOptions, evaluate_case

SPACINGS = {"iso": None, "aniso": "random", "coarse-z": (0.7, 0.7, 2.5)}
NSD_CASES = list(itertools.product([2, 3], SPACINGS, range(6)))  # 36 random pairs


def _blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random blobs, some touching the array border, some noisy at their edge."""
    return ndimage.gaussian_filter(rng.random(shape), float(rng.uniform(1, 3))) > 0.5


def _reference_nsd(pred, ref, spacing, tolerance) -> float:
    distances = surface_distance.compute_surface_distances(ref, pred, spacing)
    return surface_distance.compute_surface_dice_at_tolerance(distances, tolerance)


@pytest.mark.parametrize("ndim, spacing_kind, seed", NSD_CASES)
def test_nsd_equals_deepminds_surface_distance(ndim, spacing_kind, seed):
    rng = np.random.default_rng(100 * ndim + seed)
    shape = (34, 30, 22)[:ndim]
    spacing = SPACINGS[spacing_kind]
    spacing = (tuple(rng.uniform(0.3, 3.0, ndim)) if spacing == "random" else
               spacing[:ndim] if spacing is not None else (1.0,) * ndim)
    pred, ref = _blobs(rng, shape), _blobs(rng, shape)
    assert pred.any() and ref.any()
    # tolerances on the grid's own distances (ties: 1 voxel, a diagonal) and between them, and 0
    for tolerance in (0.0, spacing[0], float(np.hypot(spacing[0], spacing[1])), 1.0, 2.3, 6.0):
        expected = _reference_nsd(pred, ref, spacing, tolerance)
        assert metrics.nsd(pred, ref, spacing, tolerance) == pytest.approx(expected, abs=1e-12, rel=0), tolerance
    # memory layout does not matter (volumes read from NIfTI are often Fortran-ordered views)
    assert metrics.nsd(np.asfortranarray(pred), ref.T.copy().T, spacing, 1.0) == metrics.nsd(pred, ref, spacing, 1.0)


def test_the_offset_lookup_and_the_kd_tree_give_the_same_nsd(monkeypatch):
    rng = np.random.default_rng(7)
    pred, ref = _blobs(rng, (30, 28, 20)), _blobs(rng, (30, 28, 20))
    spacing = (0.8, 0.8, 2.0)
    looked_up = [metrics.nsd(pred, ref, spacing, t) for t in (0.8, 1.0, 2.0, 3.0)]
    monkeypatch.setattr(surface_dice, "MAX_OFFSETS", 0)  # every query through the KD-tree
    assert [metrics.nsd(pred, ref, spacing, t) for t in (0.8, 1.0, 2.0, 3.0)] == pytest.approx(looked_up, abs=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.5, 2.5), (2.0, 0.3, 0.7)])
def test_surfel_areas_equal_the_references_tables(spacing):
    np.testing.assert_allclose(surface_dice.surfel_areas(spacing),
                               lookup_tables.create_table_neighbour_code_to_surface_area(spacing), rtol=1e-12)
    np.testing.assert_allclose(surface_dice.surfel_areas(spacing[:2]),
                               lookup_tables.create_table_neighbour_code_to_contour_length(spacing[:2]), rtol=1e-12)


def test_hand_computed_nsd_of_two_squares():
    """A 4x4 square (rows and columns 2..5) and the same square one row lower. Each contour runs
    through 16 corner cells: 12 straight ones holding 1 mm and 4 corners holding a diagonal of
    sqrt(2)/2 mm, 12 + 2 sqrt(2) in all. At tolerance 0 the contours share the cells of the two
    vertical sides from row 3 to 6: 3 straight cells and a corner on each side for either square,
    6 + sqrt(2) of each contour, so NSD = 1/2. At tolerance 1 mm every cell has a partner: NSD = 1."""
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.roll(a, 1, axis=0)
    assert metrics.nsd(a, b, (1.0, 1.0), 0.0) == pytest.approx(0.5, abs=1e-12)
    assert metrics.nsd(a, b, (1.0, 1.0), 1.0) == 1.0
    assert metrics.nsd(a, a, (1.0, 1.0), 0.0) == 1.0
    assert _reference_nsd(b, a, (1.0, 1.0), 0.0) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("pred_empty, ref_empty, value", [(True, True, 1.0), (True, False, 0.0), (False, True, 0.0)])
def test_empty_masks_give_nsd_and_cldice_by_the_table(pred_empty, ref_empty, value):
    shape = (12, 12, 6)
    full = np.zeros(shape, bool)
    full[3:8, 3:8, 1:4] = True
    pred = np.zeros(shape, bool) if pred_empty else full
    ref = np.zeros(shape, bool) if ref_empty else full
    assert metrics.nsd(pred, ref, None, 1.0) == value
    assert metrics.cldice(pred, ref) == value
    assert metrics.dice(pred, ref) == value  # the same rule as Dice


def _reference_cldice(pred: np.ndarray, ref: np.ndarray) -> float:
    """The definition of Shit et al., on the whole arrays (no crop), with skimage's skeletons."""
    s_pred, s_ref = skeletonize(pred), skeletonize(ref)
    t_prec = np.sum(s_pred & ref) / np.sum(s_pred)
    t_sens = np.sum(s_ref & pred) / np.sum(s_ref)
    return 2 * t_prec * t_sens / (t_prec + t_sens)


def _vessels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A few random straight tubes, 1-2 voxels thick."""
    mask = np.zeros(shape, bool)
    t = np.linspace(0, 1, 300)
    for _ in range(3):
        start, end = rng.random(len(shape)) * shape, rng.random(len(shape)) * shape
        points = np.round(start + t[:, None] * (end - start)).astype(int).clip(0, np.array(shape) - 1)
        mask[tuple(points.T)] = True
    return ndimage.binary_dilation(mask, iterations=int(rng.integers(1, 3)))


@pytest.mark.parametrize("ndim, seed", list(itertools.product([2, 3], range(5))))
def test_cldice_equals_the_papers_definition(ndim, seed):
    rng = np.random.default_rng(seed)
    shape = (60, 50, 24)[:ndim]
    ref = _vessels(rng, shape)
    pred = ref.copy()
    seeds = rng.random(shape) > (0.995 if ndim == 2 else 0.9995)
    pred[ndimage.binary_dilation(seeds, iterations=2)] ^= True  # holes, blobs
    expected = _reference_cldice(pred, ref)
    assert 0.3 < expected < 1
    assert metrics.cldice(pred, ref) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_cldice():
    """Lines one pixel wide are their own skeletons. Reference: 14 pixels of row 5. Prediction: the first 7 of
    them and a spurious 3-pixel line in row 8. Tprec = 7/10 of the predicted centreline lies in the reference,
    Tsens = 7/14 of the reference centreline is covered: clDice = 2 * 0.7 * 0.5 / 1.2 = 7/12."""
    ref = np.zeros((11, 20), bool)
    ref[5, 3:17] = True
    pred = np.zeros_like(ref)
    pred[5, 3:10] = True
    pred[8, 3:6] = True
    assert (skeletonize(ref) == ref).all() and (skeletonize(pred) == pred).all()
    assert metrics.cldice(pred, ref) == pytest.approx(7 / 12, abs=1e-12)
    assert metrics.cldice(pred[..., None], ref[..., None]) == pytest.approx(7 / 12, abs=1e-12)  # one slice: 2D


def test_options_choose_the_columns_tolerances_and_tubular_classes():
    rng = np.random.default_rng(3)
    ref = _vessels(rng, (40, 36, 12)).astype(np.int64)
    ref[5:15, 5:15, 2:8] = 2
    pred = np.roll(ref, 1, axis=0)
    spacing = (0.5, 0.5, 1.5)
    labels = {0: "background", 1: "vessel", 2: "organ"}
    options = MetricOptions(names=("nsd", "cldice", "hd95"), tolerance=(0.5, 2.0), tubular=frozenset({1}))
    vessel, organ = evaluate_case("c", pred, ref, labels, spacing, options=options)
    counts = ["pred_voxels", "ref_voxels"]
    assert list(vessel) == ["case", "class", "name", "dice", "nsd", "cldice", "hd95", *counts]
    assert list(organ) == ["case", "class", "name", "dice", "nsd", "hd95", *counts]  # not tubular: no clDice
    assert (organ["pred_voxels"], organ["ref_voxels"]) == (np.count_nonzero(pred == 2), np.count_nonzero(ref == 2))
    assert vessel["nsd"] == metrics.nsd(pred == 1, ref == 1, spacing, 0.5)
    assert organ["nsd"] == metrics.nsd(pred == 2, ref == 2, spacing, 2.0)
    assert vessel["cldice"] == metrics.cldice(pred == 1, ref == 1)
    with pytest.raises(UserError, match="lists 3 tolerances for 2 foreground classes"):
        evaluate_case("c", pred, ref, labels, spacing, options=MetricOptions(tolerance=(1.0, 2.0, 3.0)))


def test_a_single_slice_volume_is_scored_as_its_image():
    rng = np.random.default_rng(4)
    ref = _vessels(rng, (50, 40)).astype(np.int64)
    pred = np.roll(ref, 2, axis=1)
    labels = {0: "background", 1: "vessel"}
    options = MetricOptions(tubular=frozenset({1}))
    (flat,) = evaluate_case("c", pred[..., None], ref[..., None], labels, (0.5, 0.5, 1.0), options=options)
    (image,) = evaluate_case("c", pred, ref, labels, (0.5, 0.5), options=options)
    assert flat == image
    assert flat["hd95"] == metrics.hd95(pred == 1, ref == 1, (0.5, 0.5))  # 2D surfaces, not every pixel


def test_metrics_csv_leaves_a_metric_a_class_lacks_empty(tmp_path):
    rows = [{"case": "a", "class": 1, "name": "vessel", "dice": 0.5, "cldice": 0.25},
            {"case": "a", "class": 2, "name": "organ", "dice": 0.75}]
    write_metrics_csv(rows, tmp_path / "metrics.csv")
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["case,class,name,dice,cldice", "a,1,vessel,0.5,0.25", "a,2,organ,0.75,"]
    assert read_metrics_csv(tmp_path / "metrics.csv") == rows


def test_configuration_keys_are_checked(tmp_path):
    cfg = load_config(None, ["evaluate.metrics=[dice, nsd]", "evaluate.nsd_tolerance_mm=[1, 2.5]",
                             "data.tubular_classes=[2]"])
    assert cfg.evaluate.metrics == ("dice", "nsd") and cfg.evaluate.nsd_tolerance_mm == (1.0, 2.5)
    assert load_config(None, ["evaluate.nsd_tolerance_mm=2"]).evaluate.nsd_tolerance_mm == 2.0
    assert load_config(None).evaluate.metrics == REPORT_METRICS
    for bad, message in (("evaluate.metrics=[dice, hd99]", "must list metrics of dice, jaccard, nsd"),
                         ("evaluate.nsd_tolerance_mm=-1", "tolerance in mm >= 0"),
                         ("data.tubular_classes=[0]", "foreground label ids")):
        with pytest.raises(UserError, match=message):
            load_config(None, [bad])


@pytest.mark.slow
def test_evaluate_cli_takes_the_options_as_flags(tmp_path):
    rng = np.random.default_rng(5)
    ref = _vessels(rng, (30, 30, 10)).astype(np.uint8)
    pred = np.roll(ref, 1, axis=1)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    for folder, volume in (("pred", pred), ("ref", ref)):
        (tmp_path / folder).mkdir()
        save_nifti(volume, affine, tmp_path / folder / "c1.nii.gz")
    done = run_cli("-m", "pipeline.evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                   "--out", str(tmp_path / "out"), "--metrics", "nsd", "cldice", "--nsd-tolerance", "0.5",
                   "--tubular", "1")
    assert done.returncode == 0, done.stderr
    (row,) = read_metrics_csv(tmp_path / "out" / "metrics.csv")
    assert set(row) == {"case", "class", "name", "dice", "nsd", "cldice", "pred_voxels", "ref_voxels"}
    assert row["nsd"] == pytest.approx(metrics.nsd(pred == 1, ref == 1, (0.5, 0.5, 2.0), 0.5), abs=1e-6)
    assert row["cldice"] == pytest.approx(metrics.cldice(pred == 1, ref == 1), abs=1e-6)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["classes"]["1"]["metrics"]) == {"dice", "nsd", "cldice"}
    assert "| case | class | dice | nsd | cldice |" in (tmp_path / "out" / "report.md").read_text()
    bad = run_cli("-m", "pipeline.evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
                  "--out", str(tmp_path / "out2"), "--metrics", "nsd", "clDice")
    assert bad.returncode == 2 and "evaluate.metrics must list metrics of" in bad.stderr and "clDice" in bad.stderr
    assert "Traceback" not in bad.stderr
