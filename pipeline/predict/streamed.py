"""Streamed sliding-window prediction: a volume predicted slab by slab along its last axis.

The windows are the ones MONAI's ``sliding_window_inference`` places on the whole
volume (same starts, same blending weights), taken in order of their start along
the last axis. A rolling buffer one patch deep holds the blended logits of the
slices that windows still touch; as soon as no later window reaches a slice, it is
final and handed on (to be written to disk). Memory depends on the patch and the
slice size, never on the number of slices, and the blended logits equal the
whole-volume ones (up to the order of floating-point sums).

Written by hand because MONAI's sliding window returns the whole volume at once;
its window placement (``dense_patch_slices``) and weights (``compute_importance_map``)
are reused so that the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from ..config import InferConfig
from .engines import Engine

Reader = Callable[[int, int], torch.Tensor]  # (first slice, stop) -> (C, H, W, stop - first) float32


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Window starts along one axis of ``size`` voxels, exactly as MONAI places them."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    return sorted({s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))})


@dataclass
class Slab:
    """Final blended logits (K, H, W, n) of the slices ``start`` to ``start + n``: a view into the
    rolling buffer, valid until the next slab is asked for (copy it to keep it)."""

    start: int
    logits: torch.Tensor


def stream_logits(engine: Engine, read: Reader, shape: tuple[int, int, int], roi: tuple[int, int, int],
                  infer: InferConfig, n_classes: int, slices: tuple[int, int] | None = None) -> Iterator[Slab]:
    """Blended sliding-window logits of a (H, W, D) volume, slab by slab in slice order.

    ``read(z0, z1)`` gives the network input (C, H, W, z1 - z0) of those slices; the volume must be
    at least one patch in every axis. ``infer.tta`` averages the flipped passes of each window
    batch (every flip of the axes the patch spans), rather than of the whole volume.

    ``slices=(a, b)`` yields slices a to b only, running just the windows that reach them: the
    whole volume's windows in the same order, so the values equal those of a full pass (a resumed
    prediction starts at its first missing slice, torchrun ranks take disjoint ranges).
    """
    if any(s < r for s, r in zip(shape, roi)):
        raise ValueError(f"streamed prediction needs a volume of at least the patch {roi}, got {shape}")
    device = engine.device
    starts = [window_starts(s, r, infer.overlap) for s, r in zip(shape, roi)]
    a, b = slices if slices is not None else (0, shape[2])
    starts[2] = [z for z in starts[2] if z < b and z + roi[2] > a]  # the windows that reach slices a..b
    if not starts[2]:
        return
    blend = _Blend(shape, roi, starts, infer.blend, n_classes, device)
    first = starts[2][0]  # the slice at index 0 of the buffers
    for i, z in enumerate(starts[2]):
        block = read(z, z + roi[2]).to(device)  # (C, H, W, depth)
        windows = [(x, y) for x in starts[0] for y in starts[1]]
        for k in range(0, len(windows), infer.sw_batch_size):
            batch = windows[k : k + infer.sw_batch_size]
            crops = torch.stack([block[:, x : x + roi[0], y : y + roi[1]] for x, y in batch])
            logits = _window_logits(engine, crops, roi, infer.tta)
            for (x, y), out in zip(batch, logits):
                blend.add(out, (slice(None), slice(x, x + roi[0]), slice(y, y + roi[1]), slice(z - first, None)))
        del block  # before the next slab is read
        done = (starts[2][i + 1] if i + 1 < len(starts[2]) else z + roi[2]) - first  # no later window reaches these
        lo, hi = max(a - first, 0), min(b - first, done)  # the finished slices inside a..b
        if hi > lo:
            yield Slab(first + lo, blend.finish(lo, hi, first))
        blend.shift(done)
        first += done


class _Blend:
    """The rolling buffers of blended logits (K, H, W, depth) and of their weights.

    Constant blending weighs every voxel 1: no products, and each voxel's weight sum is the number
    of windows covering it, a product of per-axis counts (exact integers, as the summed ones would
    be), so no weight buffer is kept."""

    def __init__(self, shape, roi, starts, mode: str, n_classes: int, device: torch.device):
        self.weighted, self.starts, self.depth, self.device = mode != "constant", starts, roi[2], device
        self.weight = compute_importance_map(roi, mode=mode, device=device, dtype=torch.float32)[None]  # (1, *roi)
        self.total = _buffer(shape, roi[2], n_classes, device)
        self.count = _buffer(shape, roi[2], 1, device) if self.weighted else _coverage(starts[:2], roi, shape, device)

    def add(self, out: torch.Tensor, box: tuple[slice, ...]) -> None:
        """Add one window's logits (K, *roi), possibly bf16 (the in-place add upcasts them exactly)."""
        if self.weighted:
            self.total[box] += out * self.weight
            self.count[box] += self.weight
        else:
            self.total[box] += out

    def finish(self, lo: int, hi: int, first: int) -> torch.Tensor:
        """Buffer slices lo..hi (volume slices first + lo ...) divided by their weights: a view."""
        if self.weighted:
            self.total[..., lo:hi] /= self.count[..., lo:hi]
        else:  # slice by slice: no temporary larger than a slice
            for j, c in enumerate(_covering(self.starts[2], self.depth, first + lo, first + hi, self.device).tolist()):
                self.total[..., lo + j] /= self.count[..., 0] * c
        return self.total[..., lo:hi]

    def shift(self, n: int) -> None:
        self.total = _shift(self.total, n)
        if self.weighted:
            self.count = _shift(self.count, n)


def _buffer(shape: tuple[int, int, int], depth: int, channels: int, device: torch.device) -> torch.Tensor:
    """A zero (channels, H, W, depth) view of memory stored channels-last, the memory order of a
    channels-last network's output: adding windows and the argmax over classes then run over
    contiguous memory (a classes-first buffer made the argmax alone cost more than the network)."""
    return torch.zeros(shape[0], shape[1], depth, channels, device=device).permute(3, 0, 1, 2)


def _window_logits(engine: Engine, crops: torch.Tensor, roi, tta: bool) -> torch.Tensor:
    """Logits (B, K, *roi) of window crops (B, C, *roi), averaged in float32 over flips with ``tta``;
    without, the engine's own output (bf16 under autocast: no float32 copy of each window)."""
    if not tta:
        return engine(crops)
    axes = [2 + a for a, size in enumerate(roi) if size > 1]
    flips = [()] + [tuple(d for j, d in enumerate(axes) if mask >> j & 1) for mask in range(1, 2 ** len(axes))]
    total = None
    with torch.inference_mode():
        for dims in flips:
            out = engine(crops.flip(dims) if dims else crops).float()
            out = out.flip(dims) if dims else out
            total = out if total is None else total + out
    return total / len(flips)


def _coverage(starts: list[list[int]], roi: tuple[int, int, int], shape: tuple[int, int, int],
              device: torch.device) -> torch.Tensor:
    """(1, H, W, 1) float32: how many windows cover each in-plane position."""
    rows, cols = (_covering(s, r, 0, n, device) for s, r, n in zip(starts, roi, shape))
    return (rows[:, None] * cols[None, :])[None, :, :, None]


def _covering(starts: list[int], size: int, lo: int, hi: int, device: torch.device) -> torch.Tensor:
    """(hi - lo,) float32: how many of the windows starting at ``starts`` (``size`` long) cover each of lo..hi."""
    counts = torch.zeros(hi - lo, dtype=torch.float32, device=device)
    for s in starts:
        a, b = max(s, lo), min(s + size, hi)
        if b > a:
            counts[a - lo : b - lo] += 1
    return counts


def _shift(buffer: torch.Tensor, n: int) -> torch.Tensor:
    """The buffer moved ``n`` slices towards its start, in place, zeros behind. Slice by slice in
    increasing order, so every source slice is read before it is overwritten and no copy of the
    kept slices is needed (a clone would cost up to a whole buffer)."""
    kept = buffer.shape[-1] - n
    for j in range(max(kept, 0)):
        buffer[..., j].copy_(buffer[..., j + n])
    buffer[..., max(kept, 0) :] = 0
    return buffer
