"""Training step of a single-slice (2D) network: PyTorch's 3D kernels vs the 2D fast path.

    python benchmarks/single_slice_speed.py [--steps 6]

The DRIVE preset's network (`unet`, widths 16-256, batch 4 x 256 x 256 x 1, bf16
autocast where native, channels-last as in training) runs forward + backward +
SGD step with the (3, 3, 1) convolutions, transposed convolutions and pooling
executed as PyTorch's 3D operations (``nn.Conv3d.forward`` etc.) and then
through ``models3d.blocks``' 2D fast path (same weights, same values). Prints the
median seconds per step of each and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models3d import blocks, build_model  # noqa: E402
from pipeline.runtime import autocast, resolve_precision  # noqa: E402


@contextlib.contextmanager
def three_d_kernels():
    """Route every fast-path operation back to PyTorch's 3D implementation."""
    def pool(x, pool, return_indices=False):
        return F.max_pool3d(x, kernel_size=pool, stride=pool, return_indices=return_indices)
    with mock.patch.object(blocks.Conv3d, "forward", nn.Conv3d.forward), \
         mock.patch.object(blocks.ConvTranspose3d, "forward", nn.ConvTranspose3d.forward), \
         mock.patch("models3d.unet.max_pool", pool):
        yield


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
    model = build_model("unet", 1, 2, channels=(16, 32, 64, 128, 256), patch_size=patch)
    model = model.to(memory_format=torch.channels_last_3d)
    x = torch.randn(4, 1, *patch).to(memory_format=torch.channels_last_3d)
    y = torch.randint(0, 2, (4, *patch))
    amp = resolve_precision("auto", torch.device("cpu"))
    with three_d_kernels():
        slow = seconds_per_step(model, x, y, args.steps, amp)
    fast = seconds_per_step(model, x, y, args.steps, amp)
    print(f"unet 16-256, batch 4 x {patch}, {amp or 'fp32'}, {torch.get_num_threads()} threads, median of {args.steps}")
    print(f"3D kernels (3, 3, 1): {slow:.3f} s/step")
    print(f"2D fast path:         {fast:.3f} s/step")
    print(f"speed-up: {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
