"""Training samples per second with 1 and 2 torchrun processes, side by side.

    python benchmarks/ddp_scaling.py [--config configs/demo.yaml] [--data DIR] [--epochs 6]

Runs ``torchrun --standalone --nproc_per_node=N train.py`` for N = 1 and 2 on the
same data and reads the epoch times from each run's log.csv (median over epochs
after the first). On this 2-core machine two processes share the same two cores,
so the figure shows correctness and overhead, not a speed-up: DDP pays off with
one GPU (or one machine) per process.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.data.layouts import load_dataset
from pipeline.data.splits import split_cases
from pipeline.data.synthetic import PhantomSpec, generate_dataset


def run(nproc: int, config: str, data: Path, out: Path, epochs: int) -> float:
    """Median seconds per epoch (after the first) of one torchrun training."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py",
           "--config", config, "--set", f"data.root={data}", f"output_dir={out}", f"train.epochs={epochs}",
           f"train.val_every={epochs}", "data.val_fraction=0.25"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    with open(out / "latest" / "log.csv", newline="", encoding="utf-8") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)][1:-1]  # no warm-up, no validation epoch
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", type=Path, help="dataset root (default: 8 generated demo phantoms)")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or generate_dataset(Path(tmp) / "data", PhantomSpec(n_train=8, n_test=1))
        cfg = load_config(args.config, [f"data.root={data}", "data.val_fraction=0.25"])
        train, _, _ = split_cases(list(load_dataset(data, cfg.data).training), cfg.data, cfg.train.seed)
        crops = {}
        for n in (1, 2):
            per_rank = -(-len(train) // n)  # each rank steps over its padded share
            crops[n] = (per_rank * n * cfg.train.samples_per_volume,
                        run(n, args.config, data, Path(tmp) / f"out{n}", args.epochs))
    print(f"{len(train)} training cases, patch {cfg.train.patch_size}, {torch.get_num_threads()} threads per process, "
          "2 cores in all")
    print("| processes | crops per epoch | s/epoch (median) | crops/s |\n| ---: | ---: | ---: | ---: |")
    for n, (samples, seconds) in crops.items():
        print(f"| {n} | {samples} | {seconds:.2f} | {samples / seconds:.1f} |")
    ratio = (crops[2][0] / crops[2][1]) / (crops[1][0] / crops[1][1])
    print(f"2 processes / 1 process: {ratio:.2f}x crops per second (both share 2 cores: this shows overhead, "
          "not scaling)")


if __name__ == "__main__":
    main()
