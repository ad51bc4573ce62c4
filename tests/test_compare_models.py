"""The rules of benchmarks/compare_models.py: when a run is redone, what a step buys, the table's order."""

import csv
import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(BENCHMARKS))  # it imports real_data.py beside it
    try:
        spec = importlib.util.spec_from_file_location("compare_models", BENCHMARKS / "compare_models.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _log(path: Path, losses: list[float]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "seconds"])
        writer.writeheader()
        writer.writerows({"epoch": i + 1, "train_loss": x, "seconds": 1.0} for i, x in enumerate(losses))
    return path


@pytest.mark.parametrize("losses, redo", [
    ([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.3, 0.2], False),   # falling
    ([1.0, 0.8, math.nan, 0.5], True),                    # not finite
    ([0.5, 0.6, 0.5, 0.6, 0.5, 0.6, 0.5, 0.6], True),     # last quarter 1.1 no lower than the first's 1.1
    ([0.9, 0.2, 0.9, 0.9], True),                         # one quarter each: 0.9 against 0.9
    ([0.2, 0.9, 0.9], False),                             # under 4 epochs: no quarter to compare
])
def test_a_run_is_redone_when_its_loss_is_not_finite_or_does_not_fall(compare, tmp_path, losses, redo):
    assert compare.diverged(_log(tmp_path / "log.csv", losses)) is redo


def test_loss_at_reads_the_epoch_in_which_the_step_count_was_reached(compare, tmp_path):
    _log(tmp_path / "unet" / "lr0.1" / "latest" / "log.csv", [0.9, 0.7, 0.5, 0.4])
    row = {"model": "unet", "lr": 0.1, "steps": 40, "epochs": 4}   # 10 steps per epoch
    assert compare.loss_at(tmp_path, row, 10) == 0.9
    assert compare.loss_at(tmp_path, row, 11) == 0.7               # step 11 is in epoch 2
    assert compare.loss_at(tmp_path, row, 30) == 0.5


def test_the_table_ranks_by_dice_and_names_the_step_count_every_model_reached(compare, tmp_path):
    rows = []
    for name, dice, steps in (("unet", 0.70, 40), ("resunet", 0.85, 80)):
        _log(tmp_path / name / "lr0.1" / "latest" / "log.csv", [0.9, 0.6, 0.4, 0.3])
        rows.append({"model": name, "params_m": 5.0, "gmac": 10.0, "step_s": 1.0, "steps": steps, "epochs": 4,
                     "lr": 0.1, "train_min": 1.0, "test_s_per_case": 2.0, "dice_mean": dice, "dice_std": 0.01})
    lines = compare.table(rows, "la_heart", tmp_path).splitlines()
    assert lines[0].endswith("training loss at step 40 |")
    assert [line.split("|")[1].strip() for line in lines[2:4]] == ["resunet", "unet"]
    # resunet takes 20 steps an epoch, so step 40 falls in its epoch 2; unet's 10 reach 40 in epoch 4
    assert lines[2].split("|")[-2].strip() == "0.6000" and lines[3].split("|")[-2].strip() == "0.3000"
