"""SegNet (Badrinarayanan et al. 2017) and U-SegNet (Kumar et al. 2018) in 3D.

The decoder upsamples with the encoder's max-pooling indices (max-unpooling);
U-SegNet adds U-Net concatenation skips at the top ``skips`` levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import (Conv3d, LevelPlan, check_input, make_block, make_encoder, max_pool, max_unpool,
                     plan_levels)


class SegNet(nn.Module):
    """SegNet / U-SegNet with ``skips`` concatenation skips (0 = plain SegNet).

    Encoder level ``k`` maps to ``channels[k]`` and max-pools with indices; the
    bottom level is mirrored by ``decoder.level<D>``; each decoder level unpools
    with the indices of its encoder level, optionally concatenates the encoder
    features, and maps to the width of the level above.

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
    ):
        super().__init__()
        depth = len(channels)
        if not 0 <= skips < depth:
            raise ValueError(f"skips must be between 0 and {depth - 1} for {depth} levels, got {skips}")
        self.skips = skips
        self.plan: LevelPlan = plan_levels(tuple(patch_size), depth)
        kernels = self.plan.kernels
        self.encoder = make_encoder(residual, in_channels, channels, kernels, norm, dropout)
        decoder = {}
        for i in reversed(range(depth)):
            in_ch = channels[i] * (2 if i < skips else 1)
            out_ch = channels[max(i - 1, 0)]
            decoder[f"level{i + 1}"] = make_block(residual, in_ch, out_ch, kernels[i], norm, dropout)
        self.decoder = nn.ModuleDict(decoder)
        self.head = Conv3d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.plan)
        features, indices = [], []
        encoder = list(self.encoder.values())
        for level, pool in zip(encoder[:-1], self.plan.pools):
            x = level(x)
            features.append(x)
            x, idx = max_pool(x, pool, return_indices=True)
            indices.append(idx)
        x = encoder[-1](x)

        decoder = list(self.decoder.values())  # bottom level first
        x = decoder[0](x)
        for i in reversed(range(len(features))):
            pool = self.plan.pools[i]
            x = max_unpool(x, indices[i], pool, features[i].shape[2:])
            if i < self.skips:
                x = torch.cat([x, features[i]], dim=1)
            x = decoder[len(features) - i](x)
        return self.head(x)
