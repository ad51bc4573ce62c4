"""Training patches drawn from lazy stores: only the chunks a patch overlaps are read.

``StoredCrops`` draws like MONAI's ``RandCropByPosNegLabeld``: each patch is centred
on a foreground voxel with probability ``train.pos_fraction`` and on a background
voxel otherwise, each voxel of the chosen kind equally likely, and the patch is
moved inside the volume. Instead of the voxel indices of the whole volume (which
for a 2 G-voxel stack would need 16 GB), the store's block index gives the voxels
per block: a block is drawn in proportion to its count, then one of its voxels
uniformly, which is the same distribution over voxels at the cost of reading one
block's labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, Transform

from ..data.store import CHUNK, VolumeStore
from ..data.transforms import IMAGE, LABEL

STORE = "store"  # the item key holding a store's folder


class StoredCrops(Randomizable, Transform):
    """``{"store": folder}`` -> ``num_samples`` dicts of image (1, *patch) float32 and label (1, *patch)."""

    def __init__(self, patch_size: Sequence[int], pos_fraction: float, num_samples: int):
        self.patch = tuple(int(p) for p in patch_size)
        self.pos_fraction = pos_fraction
        self.num_samples = num_samples
        self._stores: dict[str, VolumeStore] = {}  # opened once per folder

    def randomize(self, data=None) -> None:  # draws happen per sample in __call__
        pass

    def __call__(self, item: dict) -> list[dict]:
        store = self._stores.get(item[STORE])
        if store is None:
            store = self._stores[item[STORE]] = VolumeStore.open(item[STORE])
        return [self._sample(store) for _ in range(self.num_samples)]

    def _sample(self, store: VolumeStore) -> dict:
        centre = self._centre(store, foreground=self.R.rand() < self.pos_fraction)
        size = tuple(min(p, s) for p, s in zip(self.patch, store.shape))
        start = tuple(int(np.clip(c - n // 2, 0, s - n)) for c, n, s in zip(centre, size, store.shape))
        image, label = store.window(start, size)
        pad = [(0, p - n) for p, n in zip(self.patch, size)]  # a volume thinner than the patch
        image, label = np.pad(image, pad), np.pad(label, pad)
        return {IMAGE: MetaTensor(torch.from_numpy(image)[None]),
                LABEL: MetaTensor(torch.from_numpy(label.astype(np.float32))[None])}

    def _centre(self, store: VolumeStore, foreground: bool) -> tuple[int, int, int]:
        """A voxel drawn uniformly among the foreground (or background) voxels of the volume."""
        counts = store.foreground if foreground else store.block_voxels() - store.foreground
        if counts.sum() == 0:  # no voxel of that kind: the other kind, as MONAI does
            counts = store.block_voxels() - store.foreground if foreground else store.foreground
            foreground = not foreground
        flat = counts.ravel().astype(np.float64)
        block = np.unravel_index(int(self.R.choice(flat.size, p=flat / flat.sum())), counts.shape)
        start = [b * c for b, c in zip(block, CHUNK)]
        labels = np.asarray(store.label[tuple(slice(s, s + c) for s, c in zip(start, CHUNK))])
        voxels = np.argwhere((labels > 0) == foreground)
        offset = voxels[int(self.R.randint(len(voxels)))]
        return tuple(int(s + o) for s, o in zip(start, offset))
