"""Scoring a slice stack in bounded memory, whatever the prediction: peak RSS and seconds of
``python -m pipeline.evaluate`` against a generated kidney stack, for a good and a broken prediction.

    python benchmarks/scoring_memory.py --shape 1024 1024 1600 --work /tmp/scoring
    python benchmarks/scoring_memory.py --shape 256 256 96 --work /tmp/scoring-small --compare

Generates (once, kept in ``--work``) one kidney-like stack in the SenNet layout and two predictions of
it, written as label slices: ``good``, the label moved by two rows (the kind of error a trained network
makes), and ``broken``, seeded random foreground in half of the voxels (what an early or badly
configured network predicts: surface nearly everywhere). Each is scored by ``pipeline.evaluate`` in its
own process (wall time and the child's peak RSS by ``wait4``); the evaluation's log says how many
surface voxels it scored. ``--compare`` also scores each pair slab by slab and in memory (``rows.evaluate_case`` on
the whole volumes, where they fit) in this process and prints the difference per metric. Run it alone.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METRICS = ("dice", "nsd", "asd", "assd", "hd95", "hd")


def predictions(root: Path, work: Path) -> dict[str, Path]:
    """The two prediction folders (``<work>/<kind>/kidney_1/*.tif``), written once."""
    from pipeline.data.stack import SliceStack

    label = SliceStack(root / "kidney_1" / "labels", label=True)
    rng = np.random.default_rng(0)
    folders = {}
    for kind in ("good", "broken"):
        folder = work / kind / "kidney_1"
        folders[kind] = folder.parent
        if folder.is_dir():
            continue
        tmp = folder.with_name("kidney_1.partial")
        tmp.mkdir(parents=True, exist_ok=True)
        for z, slab in label.slabs():
            for i in range(slab.shape[2]):
                ref = slab[..., i] > 0
                pred = np.roll(ref, 2, axis=0) if kind == "good" else rng.random(ref.shape) < 0.5
                Image.fromarray(pred.astype(np.uint8)).save(tmp / f"{z + i:04d}.tif")
        tmp.rename(folder)
    return folders


def evaluate(pred: Path, ref: Path, out: Path, log: Path) -> dict:
    """``pipeline.evaluate`` in its own process: wall seconds, peak RSS (GB), the row, surface voxels."""
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        child = subprocess.Popen([sys.executable, "-m", "pipeline.evaluate", "--pred", str(pred), "--ref", str(ref),
                                  "--out", str(out), "--labels", "1"], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"pipeline.evaluate failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    with open(out / "metrics.csv", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    surface = re.findall(r"(\d+) \+ (\d+) surface voxels scored", log.read_text(encoding="utf-8"))
    return {"seconds": time.perf_counter() - start, "rss_gb": usage.ru_maxrss / 2**20, "row": row,
            "surface": tuple(map(int, surface[-1])) if surface else None}


def compared(pred: Path, ref: Path) -> dict[str, tuple[float, float]]:
    """Per metric (slab by slab, in memory): ``slabs.score_stack``, what ``pipeline.evaluate`` and
    ``test.py`` run (unrounded here, unlike metrics.csv), against ``rows.evaluate_case`` on the whole volumes."""
    from pipeline.data.io import load_image
    from pipeline.data.stack import SliceStack
    from pipeline.evaluate.rows import evaluate_case
    from pipeline.evaluate.slabs import score_stack

    labels = {0: "background", 1: "vessel"}
    (streamed,) = score_stack(SliceStack(pred, label=True), SliceStack(ref, label=True), "kidney_1", labels)
    p, _ = load_image(pred, label=True)
    r, _ = load_image(ref, label=True)
    (whole,) = evaluate_case("kidney_1", p.astype(np.uint8), (r > 0).astype(np.uint8), labels)
    return {m: (streamed[m], whole[m]) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 1600))
    parser.add_argument("--work", type=Path, required=True, help="working folder (generated data is kept and reused)")
    parser.add_argument("--compare", action="store_true", help="also score in memory and print the differences")
    args = parser.parse_args()
    root = args.work / "stack"
    if not (root / "kidney_1" / "labels").is_dir():
        subprocess.run([sys.executable, "-m", "pipeline.synthetic", "--kind", "kidney-stack", "--cases", "1",
                        "--shape", *map(str, args.shape), "--out", str(root)], cwd=REPO, check=True)
    folders = predictions(root, args.work)
    ref = args.work / "ref"
    if not ref.exists():
        ref.mkdir()
        (ref / "kidney_1").symlink_to(root / "kidney_1")
    voxels = float(np.prod(args.shape))
    print(f"pipeline.evaluate of a generated kidney stack {'x'.join(map(str, args.shape))} ({voxels / 1e9:.2f} "
          f"G voxels), one process each, {os.cpu_count()} CPUs")
    print("| prediction | seconds | peak RSS (GB) | surface voxels (pred + ref) | " + " | ".join(METRICS) + " |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in METRICS) + " |")
    for kind, pred in folders.items():
        r = evaluate(pred, ref, args.work / f"eval-{kind}-{time.strftime('%H%M%S')}", args.work / f"eval-{kind}.log")
        surface = "-" if r["surface"] is None else f"{r['surface'][0]:,} + {r['surface'][1]:,}"
        print(f"| {kind} | {r['seconds']:.0f} | {r['rss_gb']:.2f} | {surface} | "
              + " | ".join(f"{float(r['row'][m]):.6g}" for m in METRICS) + " |", flush=True)
        if args.compare:
            pairs = compared(pred / "kidney_1", root / "kidney_1" / "labels")
            print(f"  {kind}, slab by slab against in memory: " + ", ".join(
                f"{m} {b:.10g} (|diff| {abs(a - b):.1e})" for m, (a, b) in pairs.items()), flush=True)


if __name__ == "__main__":
    main()
