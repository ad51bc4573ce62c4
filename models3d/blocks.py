"""Building blocks shared by every network of the family, and the per-axis plan.

The blocks are written on plain ``torch.nn`` rather than MONAI's ``Convolution``
/ ``ResidualUnit`` for two reasons: every level needs its own per-axis kernel
(an axis of size 1 is never convolved across), and checkpoint keys must read
like the diagram (``encoder.level1.conv1.conv.weight``), which MONAI's nested
``Sequential`` builders do not give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
        self.conv = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=False)
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
