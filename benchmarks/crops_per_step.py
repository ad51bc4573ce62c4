"""Crops per step on many tiny volumes: steps and voxels per second of a planned run, with the plan's
voxels-per-step rule and with the fixed one volume and two crops it replaced.

    python benchmarks/crops_per_step.py --work /tmp/crops --cases 200 --shape 40 40 40 --budget 4m

Generates (once, kept in ``--work``) the CT phantom set at ``--shape`` and trains it twice through the
own-data path, ``train.py --set data.root=DATA train.budget=B``: ``fixed`` adds ``train.batch_size=1
train.samples_per_volume=2`` (the plan before the rule), ``planned`` lets the plan time and choose,
``forced-8`` trains 4 volumes x 2 crops a step whatever the timing says; all validate every other epoch
(``train.val_every=2``). Each run alone, one after the other; runs already in ``--work`` are read again.
Seconds per step are the median of the epochs without a validation (the log's epoch seconds over the
epoch's steps), voxels per step the crops times the patch; the last validation Dice (selection cases, the
same split on all sides) says what the budget bought.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from pathlib import Path

from planned_run import run_log  # beside this script

REPO = Path(__file__).resolve().parents[1]
SIDES = {"fixed": ["train.batch_size=1", "train.samples_per_volume=2"], "planned": [],
         "forced-8": ["train.batch_size=4", "train.samples_per_volume=2"]}
COMMON = ["train.val_every=2"]  # every other epoch without a validation, on both sides, to time the steps


def measure(run: Path) -> dict:
    """Crops, patch, seconds and voxels per step, steps per second and the last validation Dice of ``run``."""
    cfg, steps, rows = run_log(run)
    plain = [float(r["seconds"]) for r in rows if not r["val_dice"]]
    step_s = statistics.median(plain) / steps
    crops = cfg["batch_size"] * cfg["samples_per_volume"]
    voxels = crops * math.prod(cfg["patch_size"])
    dice = [float(r["val_dice"]) for r in rows if r["val_dice"]]
    return {"crops": f"{cfg['batch_size']} x {cfg['samples_per_volume']}", "patch": cfg["patch_size"],
            "epochs": len(rows), "steps": steps * len(rows), "step_s": step_s, "voxels": voxels,
            "voxels_s": voxels / step_s, "dice": dice[-1] if dice else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="a folder for the data and the runs")
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 40, 40))
    parser.add_argument("--budget", default="4m")
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "pipeline.synthetic", "--kind", "ct", "--train", str(args.cases),
                        "--test", "0", "--shape", *map(str, args.shape), "--out", str(data)], cwd=REPO, check=True)
    results = {}
    for side, keys in SIDES.items():
        out = args.work / side
        if (out / "latest").exists():  # measured before: read again
            results[side] = measure((out / "latest").resolve())
            continue
        command = [sys.executable, "train.py", "--set", f"data.root={data}", f"train.budget={args.budget}",
                   f"output_dir={out}", *COMMON, *keys]
        with open(args.work / f"{side}.log", "w", encoding="utf-8") as log:
            subprocess.run(command, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
        results[side] = measure((out / "latest").resolve())
    print(f"{args.cases} CT phantoms of {'x'.join(map(str, args.shape))} voxels, planned runs of {args.budget}")
    print("| crops per step | volumes x crops | patch | epochs | steps | s per step | steps/s | voxels/step | "
          "M voxels/s | last val Dice |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for side, r in results.items():
        print(f"| {side} | {r['crops']} | {'x'.join(map(str, r['patch']))} | {r['epochs']} | {r['steps']} | "
              f"{r['step_s']:.3f} | {1 / r['step_s']:.2f} | {r['voxels']:,} | {r['voxels_s'] / 1e6:.2f} | "
              f"{r['dice']:.4f} |")
    print(f"voxels per second, planned / fixed: {results['planned']['voxels_s'] / results['fixed']['voxels_s']:.2f}x")


if __name__ == "__main__":
    main()
