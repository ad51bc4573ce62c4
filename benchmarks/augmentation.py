"""Augmentation against none at a fixed budget: held-out Dice of the own-data path with nnU-Net's set on
and off, per budget, and the planned steps of each run (where the plan's ``AUGMENT_FROM_STEPS`` comes from).

    python benchmarks/augmentation.py drive --budgets 5m 30m --out /tmp/augmentation

For each budget, ``train.py --set data.root=... train.budget=B`` trains twice on the same seeded split as
``benchmarks/real_data.py`` (``planned_run.py``: no validation cases; the held-out cases scored by ``test.py``
with the last checkpoint): ``off`` sets every augmentation probability to 0 (flips stay), ``on`` sets the plan's set
(``plan.choices.augmentation``), so neither side depends on the threshold being measured. Each run alone,
one after the other; runs already in ``--out`` are read again. Prints, per budget, the steps each side
took, the held-out Dice, NSD and HD95 of each and on - off, and the planned steps at which the Dice gain,
fitted linear in log(steps) through the budgets, reaches 0 (the plan's ``AUGMENT_FROM_STEPS``); writes
``--out/augmentation.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.layouts import load_dataset  # noqa: E402
from pipeline.plan.choices import augmentation  # noqa: E402
from planned_run import held_out_means, planned_run  # noqa: E402
from real_data import REFERENCES, held_out  # noqa: E402

METRICS = ("dice", "nsd", "hd95")


def side_keys(on: bool, is_2d: bool) -> list[str]:
    """``--set`` keys of one side: the plan's augmentation set, or every probability at 0."""
    return [f"{key}={value}" for key, value in augmentation(on, is_2d).items()]


def measure(run: Path) -> dict:
    """Steps trained, training seconds and held-out foreground means of ``run``."""
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["train"]
    train_cases = len(json.loads((run / "split.json").read_text(encoding="utf-8"))["train"])
    per_epoch = math.ceil((cfg.get("volumes_per_epoch") or train_cases) / cfg["batch_size"])
    with open(run / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    planned = yaml.safe_load((run / "plan.yaml").read_text(encoding="utf-8"))["train"]["epochs"] * per_epoch
    means = held_out_means(run)
    return {"steps": per_epoch * len(rows), "planned": planned, "seconds": sum(float(r["seconds"]) for r in rows),
            **{m: means.get(m) for m in METRICS}}


def break_even(planned: list[float], dice_gain: list[float]) -> float | None:
    """Planned steps at which the Dice gain of augmentation, fitted linear in log(steps) through the
    budgets measured, reaches 0 (None: fewer than two budgets, or a gain that does not grow with steps)."""
    if len(planned) < 2:
        return None
    slope, intercept = np.polyfit(np.log(planned), dice_gain, 1)
    return float(np.exp(-intercept / slope)) if slope > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(REFERENCES))
    parser.add_argument("--data", help="dataset root (default: the preset's data.root)")
    parser.add_argument("--budgets", nargs="+", default=["5m", "30m"])
    parser.add_argument("--out", type=Path, required=True, help="runs go here; runs already there are read")
    args = parser.parse_args()
    cfg = load_config(ROOT / REFERENCES[args.dataset]["config"])
    root = args.data or str((ROOT / cfg.data.root).resolve())
    dataset = load_dataset(root, cfg.data)
    test_ids = held_out([c.id for c in dataset.training], 4, cfg.train.seed)
    is_2d = args.dataset == "drive"  # the two references: DRIVE's images are single slices, LA's volumes are not
    lines = [f"# Augmentation on and off: {args.dataset}, own-data path", "",
             f"`python benchmarks/augmentation.py {args.dataset} --budgets {' '.join(args.budgets)} --out "
             f"{args.out}`; held out (last checkpoint): {', '.join(test_ids)}.", "",
             "| budget | side | planned steps | steps | train s | " + " | ".join(METRICS) + " |",
             "|---" * (5 + len(METRICS)) + "|"]
    planned, gains = [], []
    for budget in args.budgets:
        got = {}
        for side in ("off", "on"):
            keys = [f"train.budget={budget}", *side_keys(side == "on", is_2d)]
            run, _ = planned_run(args.out / f"{budget}-{side}", root, test_ids, keys)
            got[side] = measure(run)
            row = got[side]
            print(f"{budget} {side:3s}: {row['planned']:6d} planned, {row['steps']:6d} trained steps in "
                  f"{row['seconds']:.0f} s; " + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS), flush=True)
            lines.append(f"| {budget} | {side} | {row['planned']} | {row['steps']} | {row['seconds']:.0f} | "
                         + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " |")
        diff = {m: got["on"][m] - got["off"][m] for m in METRICS}
        planned.append((got["on"]["planned"] + got["off"]["planned"]) / 2)
        gains.append(diff["dice"])
        print(f"{budget} on - off: " + "  ".join(f"{m} {d:+.4f}" for m, d in diff.items()), flush=True)
        lines.append(f"| {budget} | on - off | | | | " + " | ".join(f"{d:+.4f}" for d in diff.values()) + " |")
    steps = break_even(planned, gains)
    verdict = ("no break-even: the gain does not grow with steps" if steps is None else
               f"the Dice gain, linear in log(planned steps) through {len(planned)} budgets, reaches 0 at "
               f"{steps:,.0f} planned steps")
    print(verdict)
    lines += ["", verdict + " (each budget one run a side, 4 held-out cases: a trend, not a confidence interval)."]
    (args.out / "augmentation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
