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
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from levers import LEVERS, on_and_off, table_head  # noqa: E402
from planned_run import seeded_split  # noqa: E402
from real_data import REFERENCES  # noqa: E402


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
    root, test_ids = seeded_split(args.dataset, args.data)
    is_2d = args.dataset == "drive"  # the two references: DRIVE's images are single slices, LA's volumes are not
    lines = [f"# Augmentation on and off: {args.dataset}, own-data path", "",
             f"`python benchmarks/augmentation.py {args.dataset} --budgets {' '.join(args.budgets)} --out "
             f"{args.out}`; held out (last checkpoint): {', '.join(test_ids)}.", "", *table_head("budget")]
    planned, gains = [], []
    for budget in args.budgets:
        got = on_and_off(budget, lambda on: {"train.budget": budget, **LEVERS["augmentation"](on, is_2d)}, args.out,
                         root, test_ids, lines)
        planned.append((got["on"]["planned"] + got["off"]["planned"]) / 2)
        gains.append(got["on"]["dice"] - got["off"]["dice"])
    steps = break_even(planned, gains)
    verdict = ("no break-even: the gain does not grow with steps" if steps is None else
               f"the Dice gain, linear in log(planned steps) through {len(planned)} budgets, reaches 0 at "
               f"{steps:,.0f} planned steps")
    print(verdict)
    lines += ["", verdict + " (each budget one run a side, 4 held-out cases: a trend, not a confidence interval)."]
    (args.out / "augmentation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
