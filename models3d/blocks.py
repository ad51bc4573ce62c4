"""Building blocks shared by every network of the family, and the per-axis plan.

The blocks are written on plain ``torch.nn`` rather than MONAI's ``Convolution``
/ ``ResidualUnit`` for two reasons: every level needs its own per-axis kernel
(an axis of size 1 is never convolved across), and checkpoint keys must read
like the diagram (``encoder.level1.conv1.conv.weight``), which MONAI's nested
``Sequential`` builders do not give.

Operators are chosen once, at construction, from the training patch: a patch
with one axis of size 1 (a 2D image as a single-slice volume, whichever axis is
flat) builds a network of ``nn.Conv2d`` / ``nn.MaxPool2d`` ...; the model squeezes
that axis from its input and restores it on its output (``FlatAxis``).
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


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
NORM = {("instance", 2): nn.InstanceNorm2d, ("instance", 3): nn.InstanceNorm3d,
        ("batch", 2): nn.BatchNorm2d, ("batch", 3): nn.BatchNorm3d}
DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
MAX_POOL = {2: F.max_pool2d, 3: F.max_pool3d}
MAX_UNPOOL = {2: F.max_unpool2d, 3: F.max_unpool3d}


@dataclass(frozen=True)
class FlatAxis:
    """The axis (0, 1, 2 of H, W, D) a single-slice network never spans, or None for a 3D network."""

    axis: int | None

    @classmethod
    def of(cls, patch_size: Sequence[int]) -> FlatAxis:
        """The one axis of size 1 of ``patch_size``; None when no axis or several are flat."""
        flat = [a for a, size in enumerate(patch_size) if int(size) == 1]
        return cls(flat[0] if len(flat) == 1 else None)

    @property
    def dims(self) -> int:
        return 3 if self.axis is None else 2

    def reduce(self, triple: Sequence[int]) -> tuple[int, ...]:
        """A per-axis (H, W, D) tuple without the flat axis."""
        return tuple(triple) if self.axis is None else tuple(v for a, v in enumerate(triple) if a != self.axis)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W, D) -> the network's (B, C, ...) layout."""
        return x if self.axis is None else x.squeeze(2 + self.axis)

    def unsqueeze(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.axis is None else x.unsqueeze(2 + self.axis)

    def checkpoint_hook(self, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        """Load weights saved with 3D kernels of size 1 along the flat axis (the family's earlier
        single-slice form) by squeezing that axis: the same weights, the same function."""
        if self.axis is None:
            return
        own = module.state_dict()
        for key, value in state_dict.items():
            name = key[len(prefix):] if key.startswith(prefix) else None
            if name in own and value.ndim == own[name].ndim + 1 and value.shape[2 + self.axis] == 1:
                state_dict[key] = value.squeeze(2 + self.axis)


def norm_layer(norm: str, channels: int, dims: int = 3) -> nn.Module:
    """Instance or batch normalisation for ``dims``-dimensional feature maps."""
    if (norm, dims) not in NORM:
        raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")
    return NORM[norm, dims](channels, affine=True) if norm == "instance" else NORM[norm, dims](channels)


class ConvNormAct(nn.Module):
    """Convolution with 'same' padding (divided by ``stride``), normalisation, LeakyReLU (optional)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], norm: str, act: bool = True,
                 stride: Sequence[int] | None = None):
        super().__init__()
        dims = len(kernel)
        stride = tuple(stride or (1,) * dims)
        self.conv = CONV[dims](in_ch, out_ch, tuple(kernel), stride=stride, padding=tuple(k // 2 for k in kernel),
                               bias=False)
        self.norm = norm_layer(norm, out_ch, dims)
        self.act = nn.LeakyReLU(0.01, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class DoubleConv(nn.Module):
    """Two conv-norm-act layers: the plain U-Net / SegNet level (the first may stride)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], norm: str, dropout: float = 0.0,
                 stride: Sequence[int] | None = None):
        super().__init__()
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, norm, stride=stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, norm)
        self.dropout = DROPOUT[len(kernel)](dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv2(self.conv1(x)))


class ResidualBlock(nn.Module):
    """Two convolutions with an identity (or strided 1x1 projection) shortcut, He et al. 2016."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Sequence[int], norm: str, dropout: float = 0.0,
                 stride: Sequence[int] | None = None):
        super().__init__()
        dims = len(kernel)
        stride = tuple(stride or (1,) * dims)
        self.conv1 = ConvNormAct(in_ch, out_ch, kernel, norm, stride=stride)
        self.conv2 = ConvNormAct(out_ch, out_ch, kernel, norm, act=False)
        self.shortcut = (
            nn.Identity()
            if in_ch == out_ch and all(s == 1 for s in stride)
            else ConvNormAct(in_ch, out_ch, (1,) * dims, norm, act=False, stride=stride)
        )
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.dropout = DROPOUT[dims](dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.conv2(self.conv1(x)) + self.shortcut(x)))


def make_block(residual: bool, in_ch: int, out_ch: int, kernel: Sequence[int], norm: str, dropout: float,
               stride: Sequence[int] | None = None) -> nn.Module:
    """The level block of a network: residual or plain double convolution, optionally strided."""
    block = ResidualBlock if residual else DoubleConv
    return block(in_ch, out_ch, kernel, norm, dropout, stride=stride)


def make_encoder(residual: bool, in_channels: int, channels, kernels, norm: str, dropout: float,
                 strides=None) -> nn.ModuleDict:
    """``level1 .. levelD``: one block per level mapping to ``channels[i]`` (optionally strided)."""
    widths = [in_channels, *channels]
    strides = strides or [None] * len(channels)
    return nn.ModuleDict({
        f"level{i + 1}": make_block(residual, widths[i], widths[i + 1], kernels[i], norm, dropout, strides[i])
        for i in range(len(channels))
    })


def check_input(x: torch.Tensor, plan: LevelPlan, flat: FlatAxis) -> None:
    """Raise ValueError unless ``x`` is (B, C, H, W, D) with sizes divisible by the pooling
    (and one voxel along the flat axis of a single-slice network)."""
    if x.ndim != 5:
        raise ValueError(f"expected input of shape (B, C, H, W, D), got {tuple(x.shape)}")
    if flat.axis is not None and x.shape[2 + flat.axis] != 1:
        raise ValueError(f"this network was built for single-slice patches (axis {flat.axis} of size 1), "
                         f"got input {tuple(x.shape[2:])}")
    total = plan.total_pool
    if any(s % t for s, t in zip(x.shape[2:], total)):
        raise ValueError(f"input spatial shape {tuple(x.shape[2:])} must be divisible by {total}")


class PlannedNetwork(nn.Module):
    """Base of the family: the per-axis plan from the training patch, and the single-slice boundary.

    Subclasses build their stages with ``self.kernels`` / ``self.pools`` (per level, in the
    network's own dimensionality) and define ``segment(x) -> logits`` on the squeezed layout;
    ``forward`` checks the input
    (B, C, H, W, D), squeezes a flat axis, segments, and restores the axis. ``spatial_dims``
    None plans the operators from the patch; 3 keeps 3D operators for a single-slice patch
    (kernels of size 1 along the flat axis: the same function, run by 3D kernels).
    """

    def __init__(self, patch_size: Sequence[int], depth: int, spatial_dims: int | None = None,
                 deep_supervision: bool = False):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.aux_heads = nn.ModuleList()  # filled by ``supervise`` when deep_supervision
        self.plan: LevelPlan = plan_levels(tuple(patch_size), depth)
        self.flat = FlatAxis.of(patch_size) if spatial_dims != 3 else FlatAxis(None)
        if spatial_dims not in (None, self.flat.dims):
            raise ValueError(f"spatial_dims={spatial_dims} needs a patch with exactly one axis of size 1, "
                             f"got {tuple(patch_size)}")
        self.kernels = [self.flat.reduce(k) for k in self.plan.kernels]
        self.pools = [self.flat.reduce(p) for p in self.plan.pools]
        self.register_load_state_dict_pre_hook(self.flat.checkpoint_hook)

    @property
    def supervised_outputs(self) -> int:
        """How many logits tensors a training forward returns: 1, or 1 + the auxiliary heads."""
        return 1 + len(self.aux_heads)

    def supervise(self, decoder_widths: Sequence[int], out_channels: int) -> None:
        """With deep supervision, a 1x1 head to class logits on every decoder level's output but the top
        one (the network's own head) and the lowest (nnU-Net's choice); ``decoder_widths``: the widths of
        the decoder levels' outputs, bottom to top."""
        if not self.deep_supervision:
            return
        if len(decoder_widths) < 3:
            raise ValueError(f"deep_supervision needs a decoder level between the lowest and the top; this network "
                             f"decodes at {len(decoder_widths)} level(s): give model.channels another level")
        self.aux_heads = nn.ModuleList(CONV[self.flat.dims](width, out_channels, kernel_size=1)
                                       for width in reversed(list(decoder_widths)[1:-1]))

    def outputs(self, logits: torch.Tensor, decoded: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """``logits`` alone; in training with deep supervision, ``[logits, 1/2 resolution, 1/4, ...]`` from
        the auxiliary heads on ``decoded`` (every decoder level's output, bottom to top)."""
        if not (self.training and len(self.aux_heads)):
            return logits
        return [logits, *(head(x) for head, x in zip(self.aux_heads, reversed(decoded[1:-1])))]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits (B, out_channels, H, W, D) of input (B, in_channels, H, W, D); in training with deep
        supervision a list, the full-resolution logits first, then each lower resolution's."""
        check_input(x, self.plan, self.flat)
        out = self.segment(self.flat.squeeze(x))
        if isinstance(out, list):
            return [self.flat.unsqueeze(o) for o in out]
        return self.flat.unsqueeze(out)
