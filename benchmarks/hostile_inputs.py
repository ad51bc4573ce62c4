#!/usr/bin/env python
"""How many hostile inputs each entry point handles right, before and after a change.

    python benchmarks/hostile_inputs.py                       # this checkout
    python benchmarks/hostile_inputs.py --before 7e864ab~1    # and an earlier commit, side by side
    python benchmarks/hostile_inputs.py --before 8bb4038~1 --only plan train-planned   # the planned path

Every (layout, mutation) pair of ``tests/hostile.py`` (5 layouts, 20 mutations, 79 pairs) goes through
``python -m pipeline.check``, ``train.py`` (one tiny epoch with the smoke preset), ``test.py`` (a run trained
on clean data of the same layout), ``python -m pipeline.evaluate`` (the 55 pairs that concern a label file,
with the mutated file once as prediction and once as reference), and the planned path own data takes:
``python -m pipeline.plan`` and ``train.py`` without a preset; judged as ``tests/test_fuzz.py`` judges them. An earlier
commit is checked out into a temporary git worktree and run by the same harness. Each side runs in its own
process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("check", "train", "test", "evaluate", "plan", "train-planned")


def judge_all(repo: Path, entries: tuple[str, ...] = ENTRY_POINTS) -> dict[str, dict[str, str]]:
    """entry point -> "format/mutation[/seed]" -> verdict, for the code of ``repo``."""
    sys.path[:0] = [str(repo), str(REPO / "tests")]
    logging.getLogger().addHandler(logging.NullHandler())  # the entry points' own logging stays quiet
    from hostile import combinations
    from hostile_run import evaluate_combinations, judge_check, judge_evaluate, judge_plan, judge_test, judge_train

    base = Path(tempfile.mkdtemp(prefix="hostile-"))
    found: dict[str, dict[str, str]] = {entry: {} for entry in entries}
    runs = clean_runs(repo, base) if "test" in entries else {}
    judges = {"check": judge_check, "train": judge_train, "plan": judge_plan,
              "train-planned": lambda *a: judge_train(*a, planned=True),
              "test": lambda repo, where, fmt, mutation, seed: (judge_test(repo, where, runs[fmt], fmt, mutation, seed)
                                                                 if runs[fmt] else "no clean run to test with")}
    for fmt, mutation in combinations():
        for entry in (e for e in entries if e in judges):
            found[entry][f"{fmt}/{mutation}"] = judges[entry](repo, base / entry, fmt, mutation, 1)
    if "evaluate" in entries:
        for fmt, mutation in evaluate_combinations():
            for seed in (1, 2):
                found["evaluate"][f"{fmt}/{mutation}/{seed}"] = judge_evaluate(repo, base / "evaluate", fmt,
                                                                               mutation, seed)
    return found


def clean_runs(repo: Path, base: Path) -> dict[str, Path | None]:
    """A one-epoch run per layout on clean data, for ``test.py`` to be judged with (None: it failed)."""
    from hostile import FORMATS, write_dataset
    from hostile_run import call, train_args

    runs = {}
    for fmt in FORMATS:
        root = write_dataset(base / f"clean-{fmt}", fmt, "valid", 100)
        trained = call(repo, "train.py", train_args(repo, root, base / f"runs-{fmt}"))
        runs[fmt] = (base / f"runs-{fmt}" / "latest").resolve() if trained.code == 0 else None
    return runs


def table(sides: dict[str, dict[str, dict[str, str]]]) -> str:
    """Markdown: per entry point and side, inputs tried, handled right, and each kind of wrong."""
    kinds = sorted({v for side in sides.values() for entry in side.values() for v in entry.values()} - {"right"})
    lines = ["| entry point | code | tried | right | " + " | ".join(kinds) + " |",
             "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |"]
    for entry in next(iter(sides.values())):
        for name, side in sides.items():
            counts = Counter(side[entry].values())
            lines.append(f"| {entry} | {name} | {sum(counts.values())} | {counts['right']} | "
                         + " | ".join(str(counts[k]) for k in kinds) + " |")
    for name, side in sides.items():
        total = [v for entry in side.values() for v in entry.values()]
        lines.append(f"| **all** | {name} | {len(total)} | {total.count('right')} | "
                     + " | ".join(str(total.count(k)) for k in kinds) + " |")
    return "\n".join(lines)


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), rev], check=True,
                   capture_output=True)
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REV", help="also judge this earlier commit")
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)  # the child process: judge this checkout
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--details", type=Path, help="write every verdict of every side to this JSON file")
    parser.add_argument("--only", nargs="+", choices=ENTRY_POINTS, default=list(ENTRY_POINTS),
                        help="judge these entry points only")
    args = parser.parse_args()
    if args.repo is not None:
        args.json.write_text(json.dumps(judge_all(args.repo, tuple(args.only))))
        return
    sides, tmp = {}, Path(tempfile.mkdtemp(prefix="hostile-sides-"))
    checkouts = {f"before ({args.before})": worktree(args.before, tmp / "before")} if args.before else {}
    checkouts["this checkout"] = REPO
    for name, repo in checkouts.items():
        out = tmp / f"{len(sides)}.json"
        subprocess.run([sys.executable, __file__, "--repo", str(repo), "--json", str(out), "--only", *args.only],
                       check=True, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sides[name] = json.loads(out.read_text())
    if args.before:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")], check=True)
    print(table(sides))
    if args.details:
        args.details.write_text(json.dumps(sides, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
