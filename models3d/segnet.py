"""SegNet (Badrinarayanan et al. 2017) and U-SegNet (Kumar et al. 2018) in 3D (2D for single-slice patches).

The decoder upsamples with the encoder's max-pooling indices (max-unpooling);
U-SegNet adds U-Net concatenation skips at the top ``skips`` levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import CONV, MAX_POOL, MAX_UNPOOL, PlannedNetwork, make_block, make_encoder


class SegNet(PlannedNetwork):
    """SegNet / U-SegNet with ``skips`` concatenation skips (0 = plain SegNet).

    Encoder level ``k`` maps to ``channels[k]`` and max-pools with indices; the
    bottom level is mirrored by ``decoder.level<D>``; each decoder level unpools
    with the indices of its encoder level, optionally concatenates the encoder
    features, and maps to the width of the level above; ``head`` gives class logits.

    Input (B, in_channels, H, W, D) -> logits (B, out_channels, H, W, D).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128, 256),
        skips: int = 0,
        residual: bool = False,
        norm: str = "instance",
        dropout: float = 0.0,
        patch_size: Sequence[int] = (112, 112, 80),
        spatial_dims: int | None = None,
        deep_supervision: bool = False,
    ):
        depth = len(channels)
        if not 0 <= skips < depth:
            raise ValueError(f"skips must be between 0 and {depth - 1} for {depth} levels, got {skips}")
        super().__init__(patch_size, depth, spatial_dims, deep_supervision)
        self.skips = skips
        self.encoder = make_encoder(residual, in_channels, channels, self.kernels, norm, dropout)
        self.decoder = nn.ModuleDict({
            f"level{i + 1}": make_block(residual, channels[i] * (2 if i < skips else 1), channels[max(i - 1, 0)],
                                        self.kernels[i], norm, dropout)
            for i in reversed(range(depth))
        })
        self.head = CONV[self.flat.dims](channels[0], out_channels, kernel_size=1)
        self.supervise([channels[max(i - 1, 0)] for i in reversed(range(depth))], out_channels)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The bottom level's features, and per level above it (top first) its features and pooling indices."""
        *levels, bottom = self.encoder.values()
        features, indices = [], []
        for level, pool in zip(levels, self.pools):
            x = level(x)
            features.append(x)
            x, idx = MAX_POOL[self.flat.dims](x, kernel_size=pool, stride=pool, return_indices=True)
            indices.append(idx)
        return bottom(x), features, indices

    def decode(self, x: torch.Tensor, features: list[torch.Tensor], indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """The bottom decoder level, then per level upwards: unpool with the encoder's indices,
        concatenate its features (the top ``skips`` levels), level block. Every level's output."""
        bottom, *levels = self.decoder.values()
        x = bottom(x)
        decoded = [x]
        for level, i in zip(levels, reversed(range(len(features)))):
            pool = self.pools[i]
            x = MAX_UNPOOL[self.flat.dims](x, indices[i], kernel_size=pool, stride=pool,
                                           output_size=features[i].shape[2:])
            if i < self.skips:
                x = torch.cat([x, features[i]], dim=1)
            x = level(x)
            decoded.append(x)
        return decoded

    def segment(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        decoded = self.decode(*self.encode(x))
        return self.outputs(self.head(decoded[-1]), decoded)
