"""Run the entry points on the datasets of ``hostile.py`` in this process, as a user would, and judge each
outcome: a valid result, or a refusal in one clear line, and nothing written outside the run's own folder.

Entry points are started with ``runpy`` (``python -m pipeline.check``, ``python train.py``, ...), so that
the same harness can judge any checkout whose ``pipeline`` package is first on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hostile import IMAGE_MUTATIONS, MUTATIONS, clean_cases, mutate_arrays, snapshot, write_dataset

EVALUATE_FORMATS = ("msd", "mha", "png", "stack")
LABEL_DIR = {"msd": "labelsTr", "mha": "labels", "png": "labels", "stack": "."}
TINY_RUN = ["train.epochs=1", "train.patch_size=[16,16,8]", "model.channels=[4,8]", "train.samples_per_volume=1",
            "train.batch_size=1", "data.val_fraction=0.25"]


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    crash: str | None = None  # an exception that escaped the entry point: the user sees a traceback


def call(repo: Path, target: str, argv: list[str]) -> Outcome:
    """``python -m target argv`` (a module) or ``python repo/target argv`` (a script), in this process."""
    out, err, code, crash = io.StringIO(), io.StringIO(), 0, None
    saved = sys.argv
    sys.argv = [target, *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if target.endswith(".py"):
                runpy.run_path(str(repo / target), run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - that is what is being judged
        code, crash = 1, f"{type(exc).__name__}: {exc}"
    finally:
        sys.argv = saved
    return Outcome(code, out.getvalue(), err.getvalue(), crash)


def one_line(outcome: Outcome) -> bool:
    """Exit 2 with exactly one ``error:`` line on stderr, or exit 1 with the check's report of problems."""
    if outcome.code == 2:
        return sum(line.startswith("error:") for line in outcome.stderr.splitlines()) == 1
    return outcome.code == 1 and any(line.strip().startswith("error:") for line in outcome.stdout.splitlines())


def verdict(expect: str, outcome: Outcome, result_ok: bool, left_clean: bool, outside_same: bool) -> str:
    """'right', or what went wrong: 'traceback', 'silent wrong result', 'refused a valid input', ..."""
    if outcome.crash is not None:
        return "traceback"
    if not outside_same:
        return "wrote outside its folder"
    if outcome.code == 0:
        if expect == "refuse":
            return "silent wrong result (accepted)"
        return "right" if result_ok else "silent wrong result (value)"
    if not one_line(outcome) or not left_clean:
        return "unclear refusal (lines, exit code or leftovers)"
    return "refused a valid input" if expect == "accept" else "right"


def judge_check(repo: Path, base: Path, fmt: str, mutation: str, seed: int) -> str:
    root = write_dataset(base / f"{fmt}-{mutation}-{seed}", fmt, mutation, seed)
    before = snapshot(base)
    outcome = call(repo, "pipeline.check", ["--data", str(root)])
    return verdict(MUTATIONS[mutation][0], outcome, True, True, snapshot(base) == before)


def train_args(repo: Path, root: Path, out: Path, planned: bool = False) -> list[str]:
    """A tiny epoch with the smoke preset, or ``planned`` as own data is trained (no preset: the plan)."""
    preset = [] if planned else ["--config", str(repo / "configs" / "smoke.yaml")]
    return [*preset, "--set", f"data.root={root}", f"output_dir={out}", *TINY_RUN]


def judge_train(repo: Path, base: Path, fmt: str, mutation: str, seed: int, planned: bool = False) -> str:
    root = write_dataset(base / f"{fmt}-{mutation}-{seed}", fmt, mutation, seed)
    out = base / f"runs-{fmt}-{mutation}-{seed}"
    before = snapshot(base)
    outcome = call(repo, "train.py", train_args(repo, root, out, planned))
    runs = [p for p in out.iterdir() if p.name != "latest"] if out.is_dir() else []
    result_ok = len(runs) == 1 and (runs[0] / "checkpoints" / "last.pt").is_file()
    return verdict(MUTATIONS[mutation][0], outcome, result_ok, not runs, snapshot(base, skip=out) == before)


def judge_plan(repo: Path, base: Path, fmt: str, mutation: str, seed: int) -> str:
    """``python -m pipeline.plan --data ROOT`` (the epochs given: no timed steps): a plan, or one line."""
    root = write_dataset(base / f"{fmt}-{mutation}-{seed}", fmt, mutation, seed)
    before = snapshot(base)
    outcome = call(repo, "pipeline.plan", ["--data", str(root), "--set", "train.epochs=1"])
    result_ok = "plan:" in outcome.stdout and "data.spacing" in outcome.stdout
    return verdict(MUTATIONS[mutation][0], outcome, result_ok, True, snapshot(base) == before)


def judge_test(repo: Path, base: Path, run: Path, fmt: str, mutation: str, seed: int) -> str:
    """``test.py --run RUN --data ROOT``: the run was trained on clean data of the same kind."""
    root = write_dataset(base / f"{fmt}-{mutation}-{seed}", fmt, mutation, seed)
    out = base / f"test-{fmt}-{mutation}-{seed}"
    before = snapshot(base)
    outcome = call(repo, "test.py", ["--run", str(run), "--data", str(root), "--out", str(out)])
    result_ok = (out / "summary.json").is_file()
    left_clean = not out.exists() or not any(out.iterdir())
    expect = "either" if mutation == "constant_image" else MUTATIONS[mutation][0]  # a blank scan can be predicted
    return verdict(expect, outcome, result_ok, left_clean, snapshot(base, skip=out) == before)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty (the pipeline's convention)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def expected_mean_dice(fmt: str, mutation: str, seed: int) -> float:
    """The mean foreground Dice of the mutated labels against the clean ones, computed here with NumPy."""
    cases = clean_cases(fmt, seed)
    mutated = mutate_arrays(cases[0], mutation).label
    return float(np.mean([dice(mutated != 0, cases[0].label != 0), *[1.0] * (len(cases) - 1)]))


def judge_evaluate(repo: Path, base: Path, fmt: str, mutation: str, seed: int) -> str:
    """``pipeline.evaluate`` with the mutated labels as predictions (or as references: ``seed`` odd)."""
    mutated = write_dataset(base / f"{fmt}-{mutation}-{seed}", fmt, mutation, seed, damage_label=True)
    clean = write_dataset(base / f"{fmt}-{mutation}-{seed}-clean", fmt, "valid", seed)
    pred, ref = mutated / LABEL_DIR[fmt], clean / LABEL_DIR[fmt]
    pred, ref = (ref, pred) if seed % 2 else (pred, ref)
    out = base / f"evaluate-{fmt}-{mutation}-{seed}"
    before = snapshot(base)
    outcome = call(repo, "pipeline.evaluate", ["--pred", str(pred), "--ref", str(ref), "--out", str(out),
                                               "--workers", "1"])
    summary = out / "summary.json"
    result_ok = summary.is_file() and (mutation == "missing_label" or abs(  # a missing case: either way
        json.loads(summary.read_text())["mean_dice"] - expected_mean_dice(fmt, mutation, seed)) < 1e-9)
    left_clean = not out.exists() or not any(out.iterdir())
    expect = "accept" if mutation == "outside_link" else MUTATIONS[mutation][0]  # the user named these folders
    return verdict(expect, outcome, result_ok, left_clean, snapshot(base, skip=out) == before)


def evaluate_combinations() -> list[tuple[str, str]]:
    """The (format, mutation) pairs that concern a label file."""
    return [(fmt, m) for m, (_, formats) in MUTATIONS.items() for fmt in formats
            if fmt in EVALUATE_FORMATS and m not in IMAGE_MUTATIONS | {"bad_json"}]
