"""Do the inference engines agree on trained networks? ``test.py`` once per engine on each run's test split.

    python benchmarks/engine_agreement.py RUN [RUN ...] [--engines torch openvino onnxruntime]

For each run folder, ``test.py --run RUN --set infer.backend=ENGINE`` writes its own output folder
(``RUN/engines-<engine>-<time>``), each in its own process and timed the same way (wall clock of the
whole command). Prints, per run and engine, the mean foreground Dice on the run's test split and
what it scored (held-out or not), the wall time, and against the first engine: the share of voxels
whose labels are equal and the mean Dice between the two label maps per foreground class.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.metrics import dice  # noqa: E402
from pipeline.runtime import cpu_model  # noqa: E402


def test_with(run: Path, engine: str) -> tuple[Path, float, dict]:
    """Output folder, wall seconds and summary of ``test.py`` on ``run`` with ``engine``."""
    out = run / f"engines-{engine}-{time.strftime('%H%M%S')}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "test.py", "--run", str(run), "--out", str(out), "--set",
                    f"infer.backend={engine}"],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return out, seconds, json.loads((out / "summary.json").read_text(encoding="utf-8"))


def agreement(a: Path, b: Path) -> tuple[float, float]:
    """Share of equal voxels and mean per-class Dice between the label maps of two output folders."""
    equal, total, dices = 0, 0, []
    for file in sorted((a / "predictions").glob("*.nii.gz")):
        x, y = (np.asarray(nib.load(f).dataobj) for f in (file, b / "predictions" / file.name))
        equal, total = equal + int(np.count_nonzero(x == y)), total + x.size
        dices += [dice(x == c, y == c) for c in np.union1d(np.unique(x), np.unique(y)) if c > 0]
    return equal / total, float(np.mean(dices))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--engines", nargs="+", default=["torch", "openvino", "onnxruntime"])
    args = parser.parse_args()
    print(f"{cpu_model()}; one test.py process per row")
    print("| run | engine | mean Dice (scored) | test.py seconds | voxels equal to the first engine's | "
          "Dice between label maps |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for run in (r.resolve() for r in args.runs):
        first = None
        for engine in args.engines:
            out, seconds, summary = test_with(run, engine)
            first = first or out
            equal, between = agreement(first, out)
            print(f"| {run.name} | {engine} | {summary['mean_dice']:.4f} ({summary['scored']}) | {seconds:.0f} | "
                  f"{equal:.6f} | {between:.4f} |", flush=True)


if __name__ == "__main__":
    main()
