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

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline.plan.choices import augmentation  # noqa: E402
from planned_run import held_out_means, planned_run, run_log, seeded_split  # noqa: E402
from real_data import REFERENCES  # noqa: E402

METRICS = ("dice", "nsd", "hd95")
# lever -> (on, is_2d) -> the configuration keys that set it
LEVERS: dict[str, Callable[[bool, bool], dict]] = {
    "deep_supervision": lambda on, is_2d: {"model.deep_supervision": on},
    "augmentation": augmentation,
}


def measure(run: Path) -> dict:
    """Steps planned and trained, training seconds and held-out foreground means of ``run``."""
    _, per_epoch, rows = run_log(run)
    planned = yaml.safe_load((run / "plan.yaml").read_text(encoding="utf-8"))["train"]["epochs"] * per_epoch
    means = held_out_means(run)
    return {"steps": per_epoch * len(rows), "planned": planned, "seconds": sum(float(r["seconds"]) for r in rows),
            **{m: means.get(m) for m in METRICS}}


def on_and_off(label: str, keys: Callable[[bool], dict], folder: Path, root: str, test_ids: list[str],
               lines: list[str]) -> dict:
    """Train and test the ``off`` then the ``on`` side (``keys(on)``: the keys each forces) in
    ``folder/<label>-<side>``; prints each side and on - off and adds them as table rows to ``lines``.
    Returns {side: ``measure``}."""
    got = {}
    for side in ("off", "on"):
        run, _ = planned_run(folder / f"{label}-{side}", root, test_ids,
                             [f"{k}={v}" for k, v in keys(side == "on").items()])
        got[side] = row = measure(run)
        print(f"{label} {side:3s}: {row['planned']:6d} planned, {row['steps']:6d} trained steps in "
              f"{row['seconds']:.0f} s; " + "  ".join(f"{m} {row[m]:.4f}" for m in METRICS), flush=True)
        lines.append(f"| {label} | {side} | {row['planned']} | {row['steps']} | {row['seconds']:.0f} | "
                     + " | ".join(f"{row[m]:.4f}" for m in METRICS) + " |")
    diff = {m: got["on"][m] - got["off"][m] for m in METRICS}
    print(f"{label} on - off: " + "  ".join(f"{m} {d:+.4f}" for m, d in diff.items()), flush=True)
    lines.append(f"| {label} | on - off | | | | " + " | ".join(f"{d:+.4f}" for d in diff.values()) + " |")
    return got


def table_head(first: str) -> list[str]:
    """The header rows of the on / off table, its first column named ``first``."""
    return [f"| {first} | side | planned steps | steps | train s | " + " | ".join(METRICS) + " |",
            "|---" * (5 + len(METRICS)) + "|"]


def ablation(dataset: str, budget: str, root: str, test_ids: list[str], out: Path,
             levers: list[str] = sorted(LEVERS)) -> list[str]:
    """Each of ``levers`` off and on at ``budget`` on the split ``test_ids`` of ``dataset``: the table's lines
    (``real_data.py --plan B --ablation`` and this script's ``main``)."""
    is_2d = dataset == "drive"  # the two references: DRIVE's images are single slices, LA's volumes are not
    lines = table_head("lever")
    for lever in levers:
        on_and_off(lever, lambda on: {"train.budget": budget, **LEVERS[lever](on, is_2d)}, out, root, test_ids, lines)
    return [*lines, "", f"One run a side, {len(test_ids)} held-out cases: a difference, not a confidence interval."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(REFERENCES))
    parser.add_argument("--data", help="dataset root (default: the preset's data.root)")
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--levers", nargs="+", choices=sorted(LEVERS), default=sorted(LEVERS))
    parser.add_argument("--out", type=Path, required=True, help="runs go here; runs already there are read")
    args = parser.parse_args()
    root, test_ids = seeded_split(args.dataset, args.data)
    lines = [f"# The levers on and off: {args.dataset}, {args.budget}, own-data path", "",
             f"`python benchmarks/levers.py {args.dataset} --budget {args.budget} --levers {' '.join(args.levers)} "
             f"--out {args.out}`; held out (last checkpoint): {', '.join(test_ids)}.", "",
             *ablation(args.dataset, args.budget, root, test_ids, args.out, args.levers)]
    (args.out / "levers.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
