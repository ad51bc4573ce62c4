"""Print a Markdown table of the family: parameters, MACs and fwd+bwd seconds.

    python -m models3d --patch 112 112 80 --channels 16 32 64 128 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import MODEL_NAMES, build_model


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass: half the FLOP ``torch.utils.flop_counter`` counts
    (convolutions, transposed ones and matmuls; the memory-bound operators count none)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def time_step(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward pass."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        model(x).float().mean().backward()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times[1:])  # the first call warms up the allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, nargs=3, default=(112, 112, 80))
    parser.add_argument("--channels", type=int, nargs="+", default=(16, 32, 64, 128, 256))
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed fwd+bwd passes per model (0: skip timing)")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, args.in_channels, *args.patch)
    print(f"patch {tuple(args.patch)}, channels {tuple(args.channels)}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads\n")
    print("| model | parameters (M) | GMAC / forward | fwd+bwd (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name in MODEL_NAMES:
        try:
            model = build_model(name, args.in_channels, 2, channels=args.channels, patch_size=args.patch)
        except ValueError as err:
            print(f"| {name} | n/a: {err} | | |")
            continue
        params = sum(p.numel() for p in model.parameters()) / 1e6
        macs = count_macs(model, x) / 1e9
        seconds = f"{time_step(model, x, args.repeats):.2f}" if args.repeats else "-"
        print(f"| {name} | {params:.3f} | {macs:.1f} | {seconds} |")


if __name__ == "__main__":
    main()
