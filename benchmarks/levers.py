"""The recipe's levers one at a time, each on against off at one budget: the ablation of the own-data path
on a seeded held-out split (where the plan's choice of each lever comes from).

    python benchmarks/levers.py la_heart --data ../shared/datasets/LA_heart_h5/train --budget 15m \\
        --levers deep_supervision --out /tmp/levers

For each lever, ``train.py --set data.root=... train.budget=B`` trains twice on the seeded split of
``benchmarks/real_data.py`` (``planned_run.py``: no validation cases; the held-out cases scored by ``test.py``
with the last checkpoint): ``off`` and ``on`` force the lever's keys, every other key is the plan's, so neither
side depends on the plan's rule for that lever. Each run alone, one after the other; runs already in ``--out``
are read again. Prints, per lever, the steps each side trained, its held-out Dice, NSD and HD95 and on - off;
writes ``--out/levers.md``. ``benchmarks/augmentation.py`` measures the augmentation lever across budgets.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from augmentation import METRICS, measure  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data.layouts import load_dataset  # noqa: E402
from pipeline.plan.choices import augmentation  # noqa: E402
from planned_run import planned_run  # noqa: E402
from real_data import REFERENCES, held_out  # noqa: E402

# lever -> (on, is_2d) -> the configuration keys that set it
LEVERS: dict[str, Callable[[bool, bool], dict]] = {
    "deep_supervision": lambda on, is_2d: {"model.deep_supervision": on},
    "augmentation": augmentation,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(REFERENCES))
    parser.add_argument("--data", help="dataset root (default: the preset's data.root)")
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--levers", nargs="+", choices=sorted(LEVERS), default=sorted(LEVERS))
    parser.add_argument("--out", type=Path, required=True, help="runs go here; runs already there are read")
    args = parser.parse_args()
    cfg = load_config(ROOT / REFERENCES[args.dataset]["config"])
    root = args.data or str((ROOT / cfg.data.root).resolve())
    test_ids = held_out([c.id for c in load_dataset(root, cfg.data).training], 4, cfg.train.seed)
    is_2d = args.dataset == "drive"  # the two references: DRIVE's images are single slices, LA's volumes are not
    lines = [f"# The levers on and off: {args.dataset}, {args.budget}, own-data path", "",
             f"`python benchmarks/levers.py {args.dataset} --budget {args.budget} --levers {' '.join(args.levers)} "
             f"--out {args.out}`; held out (last checkpoint): {', '.join(test_ids)}.", "",
             "| lever | side | planned steps | steps | train s | " + " | ".join(METRICS) + " |",
             "|---" * (5 + len(METRICS)) + "|"]
    for lever in args.levers:
        got = {}
        for side in ("off", "on"):
            keys = [f"train.budget={args.budget}"] + [f"{k}={v}" for k, v in LEVERS[lever](side == "on", is_2d).items()]
            run, _ = planned_run(args.out / f"{lever}-{side}", root, test_ids, keys)
            got[side] = row = measure(run)
            print(f"{lever} {side:3s}: {row['planned']:6d} planned, {row['steps']:6d} trained steps in "
                  f"{row['seconds']:.0f} s; " + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS), flush=True)
            lines.append(f"| {lever} | {side} | {row['planned']} | {row['steps']} | {row['seconds']:.0f} | "
                         + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " |")
        diff = {m: got["on"][m] - got["off"][m] for m in METRICS}
        print(f"{lever} on - off: " + "  ".join(f"{m} {d:+.4f}" for m, d in diff.items()), flush=True)
        lines.append(f"| {lever} | on - off | | | | " + " | ".join(f"{d:+.4f}" for d in diff.values()) + " |")
    lines += ["", "One run a side, 4 held-out cases: a difference, not a confidence interval."]
    (args.out / "levers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
