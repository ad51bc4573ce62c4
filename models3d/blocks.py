"""Building blocks shared by every network of the family, and the per-axis plan.

The blocks are written on plain ``torch.nn`` rather than MONAI's ``Convolution``
/ ``ResidualUnit`` for two reasons: every level needs its own per-axis kernel
(an axis of size 1 is never convolved across), and checkpoint keys must read
like the diagram (``encoder.level1.conv1.conv.weight``), which MONAI's nested
``Sequential`` builders do not give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]

MIN_WIDTH = 4  # an axis is pooled only while it stays at least this many voxels wide


@dataclass(frozen=True)
class LevelPlan:
    """Kernels and pooling factors of a network with ``depth`` levels.

    ``kernels[i]`` is the convolution kernel of level ``i`` (0 = top);
    ``pools[i]`` the pooling factor between level ``i`` and ``i + 1``.
    """

    kernels: tuple[Triple, ...]
    pools: tuple[Triple, ...]

    @property
    def total_pool(self) -> Triple:
        """Product of the pooling factors per axis: inputs must be divisible by it."""
        total = [1, 1, 1]
        for pool in self.pools:
            total = [t * p for t, p in zip(total, pool)]
        return tuple(total)


def plan_levels(patch_size: tuple[int, ...], depth: int, min_width: int = MIN_WIDTH) -> LevelPlan:
    """Derive per-axis kernels and pooling factors from the training patch size.

    An axis is pooled by 2 at each of the ``depth - 1`` levels as long as it stays at
    least ``min_width`` voxels wide; an axis of size 1 is never pooled and gets
    kernel 1, so a (H, W, 1) patch runs as a true 2D network.
    Raises ValueError when the patch cannot be pooled and restored exactly.
    """
    patch = tuple(int(s) for s in patch_size)
    if len(patch) != 3 or any(s < 1 for s in patch):
        raise ValueError(f"patch_size must be three positive integers (H, W, D), got {patch_size}")
    if depth < 2:
        raise ValueError(f"a network needs at least 2 levels (len(channels) >= 2), got {depth}")

    n_pools = []
    for size in patch:
        n = 0
        while n < depth - 1 and size / 2 ** (n + 1) >= min_width:
            n += 1
        n_pools.append(n)
    factors = tuple(2**n for n in n_pools)
    bad = [axis for axis, size in enumerate(patch) if size % factors[axis]]
    if bad:
        suggestion = tuple(
            max(factors[a], round(s / factors[a]) * factors[a]) if a in bad else s
            for a, s in enumerate(patch)
        )
        raise ValueError(
            f"patch_size must be divisible by {factors} (per axis, for {depth} levels), "
            f"got {patch}; try {suggestion}"
        )

    kernels, pools = [], []
    sizes = list(patch)
    for level in range(depth):
        kernels.append(tuple(3 if s > 1 else 1 for s in sizes))
        if level < depth - 1:
            pool = tuple(2 if level < n_pools[a] else 1 for a in range(3))
            pools.append(pool)
            sizes = [s // p for s, p in zip(sizes, pool)]
    return LevelPlan(kernels=tuple(kernels), pools=tuple(pools))


def _single_slice(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> bool:
    """True when the last axis is one voxel and the operation leaves it alone (a 2D problem)."""
    return x.shape[-1] == 1 and kernel[-1] == 1 and stride[-1] == 1


class Conv3d(nn.Conv3d):
    """nn.Conv3d that runs single-slice input (B, C, H, W, 1) with a (k, k, 1) kernel as a 2D
    convolution: same weights and result, about 3x faster on the CPU than PyTorch's 3D kernel
    for the same work (64 channels, 128x128, bf16, fwd+bwd: 0.036 vs 0.108 s)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_single_slice(x, self.kernel_size, self.stride) and self.padding[-1] == 0):
            return super().forward(x)
        y = F.conv2d(x.squeeze(-1), self.weight.squeeze(-1), self.bias, self.stride[:2], self.padding[:2],
                     self.dilation[:2], self.groups)
        return y.unsqueeze(-1)


class ConvTranspose3d(nn.ConvTranspose3d):
    """nn.ConvTranspose3d with the same 2D fast path as ``Conv3d`` for single-slice input."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or not (_single_slice(x, self.kernel_size, self.stride) and self.padding[-1] == 0):
            return super().forward(x, output_size)
        y = F.conv_transpose2d(x.squeeze(-1), self.weight.squeeze(-1), self.bias, self.stride[:2], self.padding[:2],
                               self.output_padding[:2], self.groups, self.dilation[:2])
        return y.unsqueeze(-1)


def max_pool(x: torch.Tensor, pool: Triple, return_indices: bool = False):
    """Max pooling by ``pool`` (2D pooling for single-slice input; its flat indices equal the 3D ones)."""
    if _single_slice(x, pool, pool):
        out = F.max_pool2d(x.squeeze(-1), kernel_size=pool[:2], stride=pool[:2], return_indices=return_indices)
        return (out[0].unsqueeze(-1), out[1].unsqueeze(-1)) if return_indices else out.unsqueeze(-1)
    return F.max_pool3d(x, kernel_size=pool, stride=pool, return_indices=return_indices)


def max_unpool(x: torch.Tensor, indices: torch.Tensor, pool: Triple, size: Sequence[int]) -> torch.Tensor:
    """Inverse of ``max_pool`` with its indices, to spatial ``size``."""
    if _single_slice(x, pool, pool):
        y = F.max_unpool2d(x.squeeze(-1), indices.squeeze(-1), kernel_size=pool[:2], stride=pool[:2],
                           output_size=tuple(size[:2]))
        return y.unsqueeze(-1)
    return F.max_unpool3d(x, indices, kernel_size=pool, stride=pool, output_size=tuple(size))


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Instance or batch normalisation for 3D feature maps."""
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")


class ConvNormAct(nn.Module):
    """Conv3d with 'same' padding (divided by ``stride``), normalisation, LeakyReLU (optional)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, norm: str, act: bool = True, stride: Triple = (1, 1, 1)):
        super().__init__()
        self.conv = Conv3d(in_ch, out_ch, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False)
        self.norm = norm_layer(norm, out_ch)
        self.act = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DoubleConv(nn.Module):
    """Two conv-norm-act layers: the plain U-Net / SegNet level (the first may stride)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, norm: str, dropout: float = 0.0, stride: Triple = (1, 1, 1)):
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, norm, stride=stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, norm)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv2(self.conv1(x)))


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or strided 1x1 projection) shortcut, He et al. 2016."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, norm: str, dropout: float = 0.0, stride: Triple = (1, 1, 1)):
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, norm, stride=stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, norm, act=False)
        self.shortcut = (
            nn.Identity()
            if in_ch == out_ch and stride == (1, 1, 1)
            else ConvNormAct(in_ch, out_ch, (1, 1, 1), norm, act=False, stride=stride)
        )
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.conv2(self.conv1(x)) + self.shortcut(x)))


def make_block(
    residual: bool, in_ch: int, out_ch: int, kernel: Triple, norm: str, dropout: float, stride: Triple = (1, 1, 1)
) -> nn.Module:
    """The level block of a network: residual or plain double convolution, optionally strided."""
    block = ResidualBlock if residual else DoubleConv
    return block(in_ch, out_ch, kernel, norm, dropout, stride=tuple(stride))


def make_encoder(
    residual: bool, in_channels: int, channels, kernels, norm: str, dropout: float, strides=None
) -> nn.ModuleDict:
    """``level1 .. levelD``: one block per level mapping to ``channels[i]`` (optionally strided)."""
    widths = [in_channels, *channels]
    strides = strides or [(1, 1, 1)] * len(channels)
    return nn.ModuleDict(
        {
            f"level{i + 1}": make_block(residual, widths[i], widths[i + 1], kernels[i], norm, dropout, strides[i])
            for i in range(len(channels))
        }
    )


def check_input(x: torch.Tensor, plan: LevelPlan) -> None:
    """Raise ValueError unless ``x`` is (B, C, H, W, D) with sizes divisible by the pooling."""
    if x.ndim != 5:
        raise ValueError(f"expected input of shape (B, C, H, W, D), got {tuple(x.shape)}")
    total = plan.total_pool
    if any(s % t for s, t in zip(x.shape[2:], total)):
        raise ValueError(f"input spatial shape {tuple(x.shape[2:])} must be divisible by {total}")
