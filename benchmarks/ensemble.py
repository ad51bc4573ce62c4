"""One model against a K-fold ensemble at the same total budget: held-out quality and total wall time
(training + prediction) of the own-data path.

    python benchmarks/ensemble.py la_heart --data ../shared/datasets/LA_heart_h5/train --budget 15m --folds 3 \\
        --out /tmp/ensemble

Both sides train through the plan on the seeded held-out split of ``benchmarks/real_data.py`` (4 cases,
never seen in training) with ``train.budget=B``: ``single`` is one model on every other case (no validation
cases, the last checkpoint, as ``real_data.py``), ``ensemble`` is ``data.folds=K``, K folds sharing B, and
``test.py --run PARENT`` averages the probabilities of the folds' best checkpoints (each chosen on its own
validation fold, never on the held-out cases), with the post-processing decided on the pooled out-of-fold
predictions. Each run alone, one after the other;
runs already in ``--out`` are read again. Prints each side's Dice, NSD and HD95 (mean of the held-out
cases), the training and test seconds, and ensemble - single; writes ``--out/ensemble.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from levers import METRICS  # noqa: E402
from planned_run import held_out_means, planned_run, seeded_split  # noqa: E402
from real_data import REFERENCES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(REFERENCES))
    parser.add_argument("--data", help="dataset root (default: the preset's data.root)")
    parser.add_argument("--budget", default="15m", help="total training budget of each side")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="runs go here; runs already there are read")
    args = parser.parse_args()
    root, test_ids = seeded_split(args.dataset, args.data)
    sides = {"single": [f"train.budget={args.budget}"],
             "ensemble": [f"train.budget={args.budget}", f"data.folds={args.folds}"]}
    lines = [f"# One model against a {args.folds}-fold ensemble: {args.dataset}, {args.budget} in all, own-data path",
             "", f"`python benchmarks/ensemble.py {args.dataset} --budget {args.budget} --folds {args.folds} "
             f"--out {args.out}`; held out: {', '.join(test_ids)}.", "",
             "| side | train s | test s | total s | " + " | ".join(METRICS) + " |", "|---" * (4 + len(METRICS)) + "|"]
    got = {}
    for side, keys in sides.items():
        run, seconds = planned_run(args.out / side, root, test_ids, keys, "last" if side == "single" else "best")
        means = held_out_means(run)
        got[side] = {**seconds, **{m: means[m] for m in METRICS}}
        row = got[side]
        total = row["train_s"] + row["test_s"]
        print(f"{side:8s}: train {row['train_s']:.0f} s, test {row['test_s']:.0f} s; "
              + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS), flush=True)
        lines.append(f"| {side} | {row['train_s']:.0f} | {row['test_s']:.0f} | {total:.0f} | "
                     + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " |")
    diff = {m: got["ensemble"][m] - got["single"][m] for m in METRICS}
    ratio = (got["ensemble"]["train_s"] + got["ensemble"]["test_s"]) / (got["single"]["train_s"]
                                                                          + got["single"]["test_s"])
    print("ensemble - single: " + "  ".join(f"{m} {d:+.4f}" for m, d in diff.items())
          + f"; total wall time x{ratio:.2f}")
    lines.append("| ensemble - single | | | " + f"x{ratio:.2f} | " + " | ".join(f"{d:+.4f}" for d in diff.values())
                 + " |")
    (args.out / "ensemble.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
