"""Seeded fuzz over formats, layouts and entry points: every hostile dataset of ``hostile.py`` either gives
a valid result (Dice equal to a NumPy oracle for evaluation) or is refused in one clear line, with nothing
written outside the command's own folder. The full product, before and after the fixes, is counted by
``benchmarks/hostile_inputs.py``; this test runs all of the check's pairs and a seeded sample of the rest."""

from __future__ import annotations

import random

import pytest

from conftest import REPO
from hostile import FORMATS, combinations, write_dataset
from hostile_run import (call, evaluate_combinations, judge_check, judge_evaluate, judge_plan, judge_test, judge_train,
                         train_args)

SEED = 19
SAMPLE = 8  # (format, mutation) pairs per expensive entry point, besides the valid ones

pytestmark = pytest.mark.slow


def _sample(pairs: list[tuple[str, str]], salt: int) -> list[tuple[str, str]]:
    """A seeded sample that always holds the valid case of every format (a refusal-only sample proves little)."""
    rest = [p for p in pairs if p[1] != "valid"]
    valid = [p for p in pairs if p[1] == "valid"]
    return valid + random.Random(SEED + salt).sample(rest, min(SAMPLE, len(rest)))


def _wrong(verdicts: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    return {pair: v for pair, v in verdicts.items() if v != "right"}


def test_the_check_handles_every_hostile_dataset(tmp_path):
    verdicts = {(fmt, m): judge_check(REPO, tmp_path, fmt, m, SEED) for fmt, m in combinations()}
    assert len(verdicts) == 79 and _wrong(verdicts) == {}


def test_training_trains_or_refuses_in_one_line(tmp_path):
    verdicts = {(fmt, m): judge_train(REPO, tmp_path, fmt, m, SEED) for fmt, m in _sample(combinations(), 1)}
    assert _wrong(verdicts) == {}


def test_the_planned_path_plans_and_trains_or_refuses_in_one_line(tmp_path):
    """Own data as most users train it: ``python -m pipeline.plan`` and ``train.py`` without a preset."""
    pairs = _sample(combinations(), 4)[:9]  # the valid case of each layout and four hostile ones
    verdicts = {("plan", fmt, m): judge_plan(REPO, tmp_path / "plan", fmt, m, SEED) for fmt, m in pairs}
    verdicts |= {("train", fmt, m): judge_train(REPO, tmp_path / "train", fmt, m, SEED, planned=True)
                 for fmt, m in pairs}
    assert _wrong(verdicts) == {}


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory) -> dict:
    """A one-epoch run per format, trained on clean data of that format."""
    base, runs = tmp_path_factory.mktemp("clean_runs"), {}
    for fmt in FORMATS:
        root = write_dataset(base / f"clean-{fmt}", fmt, "valid", SEED + 1)
        trained = call(REPO, "train.py", train_args(REPO, root, base / f"runs-{fmt}"))
        assert trained.code == 0 and trained.crash is None, trained.stderr[-2000:]
        runs[fmt] = (base / f"runs-{fmt}" / "latest").resolve()
    return runs


def test_testing_scores_or_refuses_in_one_line_and_leaves_no_half_folder(tmp_path, clean_runs):
    verdicts = {(fmt, m): judge_test(REPO, tmp_path, clean_runs[fmt], fmt, m, SEED)
                for fmt, m in _sample(combinations(), 2)}
    assert _wrong(verdicts) == {}


@pytest.mark.parametrize("seed", [SEED, SEED + 1])  # the mutated file as prediction, then as reference
def test_evaluation_scores_what_a_numpy_oracle_scores_or_refuses(tmp_path, seed):
    verdicts = {(fmt, m): judge_evaluate(REPO, tmp_path, fmt, m, seed)
                for fmt, m in _sample(evaluate_combinations(), 3)}
    assert _wrong(verdicts) == {}
