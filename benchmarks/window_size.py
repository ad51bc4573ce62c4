"""Inference window size and overlap: network seconds per window and the windows a volume needs.

    python benchmarks/window_size.py [--shape 1024 1024 200] [--repeats 5]

The networks are fully convolutional, so a window larger than the training patch
(112 x 112 x 80) predicts the same kind of output. What it changes is the cost:
per window, the network's time per voxel (larger tensors keep the cores busier),
and per volume, how many voxels are computed twice or more where windows overlap.
For each window and overlap this prints the median forward time of one window
(the demo network, ``--repeats`` runs after a warm-up, bf16 autocast where the
CPU runs it natively, channels-last: the Predictor's settings), the number of
windows MONAI places on a volume of ``--shape`` and their product: the network
time of the whole volume, and its ratio to the training patch at overlap 0.25.
Weights are random: speed does not depend on them. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models3d import build_model  # noqa: E402
from pipeline.predict.streamed import window_starts  # noqa: E402
from pipeline.runtime import autocast, resolve_precision  # noqa: E402

CANDIDATES = [((112, 112, 80), 0.25), ((112, 112, 80), 0.125), ((224, 224, 80), 0.25), ((224, 224, 80), 0.125),
              ((256, 256, 80), 0.125), ((224, 224, 112), 0.125), ((336, 336, 80), 0.125)]


def window_seconds(model: torch.nn.Module, roi: tuple[int, int, int], repeats: int, amp) -> float:
    x = torch.randn(1, 1, *roi).contiguous(memory_format=torch.channels_last_3d)
    times = []
    with torch.inference_mode(), autocast(x.device, amp):
        model(x)  # warm-up: allocations, kernel choice
        for _ in range(repeats):
            start = time.perf_counter()
            model(x).float()
            times.append(time.perf_counter() - start)
    return statistics.median(times) if times else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(1024, 1024, 200))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time the training patch with the network compiled by torch.compile (inductor)")
    args = parser.parse_args()
    amp = resolve_precision("auto", torch.device("cpu"))
    model = build_model("resunet", 1, 2, channels=(16, 32, 64, 128), patch_size=(112, 112, 80)).eval()
    model = model.to(memory_format=torch.channels_last_3d)
    print(f"demo network (resunet 16-128), {amp or 'fp32'}, channels-last, {torch.get_num_threads()} threads; "
          f"volume {tuple(args.shape)}")
    print("| window | overlap | s / window | Mvoxel/s in the window | windows | network s for the volume "
          "| vs 112x112x80 @ 0.25 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for roi, overlap in CANDIDATES:
        seconds = window_seconds(model, roi, args.repeats, amp)
        count = 1
        for size, r in zip(args.shape, roi):
            count *= len(window_starts(size, r, overlap))
        total = seconds * count
        base = base or total
        voxels = roi[0] * roi[1] * roi[2]
        print(f"| {'x'.join(map(str, roi))} | {overlap} | {seconds:.3f} | {voxels / seconds / 1e6:.1f} | {count} | "
              f"{total:.1f} | {base / total:.2f}x |", flush=True)
    if args.compile:
        _compiled_row(model, args, amp)


def _compiled_row(model: torch.nn.Module, args: argparse.Namespace, amp) -> None:
    """The training patch at overlap 0.25 with ``torch.compile``: its compile time, and eager timed again
    right after it (the same process, the same way), so the two sit side by side."""
    roi = CANDIDATES[0][0]
    start = time.perf_counter()
    compiled = torch.compile(model)
    first = window_seconds(compiled, roi, 0, amp)  # compiles on the warm-up call
    compile_s = time.perf_counter() - start - first
    seconds, eager = window_seconds(compiled, roi, args.repeats, amp), window_seconds(model, roi, args.repeats, amp)
    print(f"torch.compile (inductor), 112x112x80: {seconds:.3f} s / window against eager {eager:.3f} "
          f"({eager / seconds:.2f}x), after {compile_s:.0f} s of compiling")


if __name__ == "__main__":
    main()
