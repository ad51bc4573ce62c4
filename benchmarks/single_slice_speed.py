"""Training step of a single-slice (2D) network: 3D operators with (3, 3, 1) kernels vs real 2D operators.

    python benchmarks/single_slice_speed.py [--steps 6]

The DRIVE preset's network (`unet`, widths 16-256, batch 4 x 256 x 256 x 1, bf16
autocast where native, channels-last as in training) runs forward + backward +
SGD step built with 3D operators (``spatial_dims=3``: Conv3d with (3, 3, 1) kernels,
3D pooling) and as the family builds it for a single-slice patch (Conv2d and 2D
pooling on the squeezed axis), with the same weights (``tests/test_models.py`` checks
they compute the same values). Both are timed the same way; prints the median seconds
per step of each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models3d import build_model  # noqa: E402
from pipeline.runtime import autocast, channels_last, resolve_precision  # noqa: E402


def seconds_per_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, amp) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        with autocast(x.device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    patch = (256, 256, 1)
    full = channels_last(build_model("unet", 1, 2, channels=(16, 32, 64, 128, 256), patch_size=patch, spatial_dims=3))
    flat = build_model("unet", 1, 2, channels=(16, 32, 64, 128, 256), patch_size=patch)
    flat.load_state_dict(full.state_dict())
    flat = channels_last(flat)
    x = torch.randn(4, 1, *patch).to(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (4, *patch))
    amp = resolve_precision("auto", torch.device("cpu"))
    slow = seconds_per_step(full, x, y, args.steps, amp)
    fast = seconds_per_step(flat, x, y, args.steps, amp)
    print(f"unet 16-256, batch 4 x {patch}, {amp or 'fp32'}, {torch.get_num_threads()} threads, median of {args.steps}")
    print(f"3D operators, (3, 3, 1) kernels: {slow:.3f} s/step")
    print(f"2D operators (the family's):     {fast:.3f} s/step")
    print(f"speed-up: {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
