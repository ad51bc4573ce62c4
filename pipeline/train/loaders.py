"""Training and validation data: cached deterministic transforms, the epoch's case order, loaders."""

from __future__ import annotations

import logging
import math
from collections.abc import Sized
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader
from monai.transforms import Compose, Randomizable
from torch.utils.data import RandomSampler

from ..config import Config
from ..data.cases import Case
from ..data.store import VolumeStore, open_store
from ..data.transforms import IMAGE, LABEL, build_transforms, random_transforms
from ..distributed import Dist, on_main, shard
from .lazy_crops import STORE, StoredCrops

log = logging.getLogger(__name__)


def _cache_bytes(item: dict) -> int:
    return sum(v.element_size() * v.numel() if isinstance(v, torch.Tensor) else getattr(v, "nbytes", 0)
               for v in item.values())


def _first_random(transform: Compose) -> int:
    return next(i for i, t in enumerate(transform.transforms) if isinstance(t, Randomizable))


def cached_dataset(items: list[dict], transform: Compose, cfg: Config, cache_dir: Path):
    """The training cases with their deterministic transforms applied once.

    In memory (MONAI CacheDataset) when the estimate (first case's size times the
    number of cases) fits ``data.cache_memory_gb``; otherwise on disk (MONAI
    PersistentDataset under the run folder), said once in the log.
    """
    deterministic = Compose(transform.transforms[: _first_random(transform)])
    estimate = _cache_bytes(deterministic(items[0])) * len(items) * cfg.data.cache_rate
    budget = cfg.data.cache_memory_gb * 2**30
    if estimate <= budget:
        return CacheDataset(items, transform, cache_rate=cfg.data.cache_rate, num_workers=None, progress=False)
    log.warning("preprocessed training data needs about %.1f GB, more than data.cache_memory_gb=%.1f: caching on disk "
                "in %s instead (raise data.cache_memory_gb to keep it in memory)", estimate / 2**30,
                cfg.data.cache_memory_gb, cache_dir)
    return PersistentDataset(items, transform, cache_dir=cache_dir)


def epoch_sampler(cases: Sized, volumes_per_epoch: int | None, generator: torch.Generator,
                  world_size: int = 1) -> RandomSampler:
    """The order in which one epoch draws this rank's training cases (indices into ``cases``).

    Unset: one permutation of the cases (what ``shuffle=True`` draws). Otherwise this rank's
    share of ``volumes_per_epoch`` draws without replacement: a random subset when fewer than the
    cases, whole permutations and then a subset when more.
    """
    per_rank = None if volumes_per_epoch is None else math.ceil(volumes_per_epoch / world_size)
    return RandomSampler(cases, num_samples=per_rank, generator=generator)


def training_loader(cfg: Config, cases: list[Case], cache_dir: Path, device: torch.device,
                    info: Dist = Dist(), lazy: bool = False) -> tuple[DataLoader, Compose]:
    """Loader over this rank's (padded) share of ``cases``: batches of (B x samples_per_volume) random
    crops; and its random transform chain, which ``replay.seed_epoch`` seeds with the loader.
    ``lazy``: the crops are read by window from lazy stores (``data.store``), built on first use."""
    if lazy:
        folders = store_folders(cfg, cases, info)
        transform = Compose([StoredCrops(cfg.train.patch_size, cfg.train.pos_fraction, cfg.train.samples_per_volume),
                             *random_transforms(cfg)[1:-1]])  # the random steps after the crop sampler
        dataset = Dataset([{STORE: folders[c.id]} for c in shard(cases, info, pad=True)], transform)
    else:
        transform = build_transforms(cfg, train=True)
        items = [{IMAGE: str(c.image), LABEL: str(c.label)} for c in shard(cases, info, pad=True)]
        dataset = cached_dataset(items, transform, cfg, cache_dir / f"rank{info.rank}" if info.enabled else cache_dir)
    generator = torch.Generator().manual_seed(cfg.train.seed + info.rank)
    sampler = epoch_sampler(dataset, cfg.train.volumes_per_epoch, generator, info.world_size)
    if device.type == "cuda":
        loader = DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.workers,
                            pin_memory=True, generator=generator, persistent_workers=cfg.data.workers > 0)
    else:  # threads: worker processes would fight the compute threads for 2 cores
        loader = ThreadDataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=0,
                                  buffer_size=1, generator=generator)
    return loader, transform


def store_folders(cfg: Config, cases: list[Case], info: Dist = Dist()) -> dict[str, str]:
    """Case id -> folder of its lazy store, built once (by rank 0 under torchrun) or reused."""
    root = Path(cfg.data.store_dir or Path(cfg.output_dir) / "stores")
    return on_main(lambda: {c.id: str(open_store(c, cfg, root).folder) for c in cases}, info)


def validation_items(cfg: Config, cases: list[Case], lazy: bool = False, info: Dist = Dist()) -> list:
    """Whole validation volumes, preprocessed once (image and label on the network grid); lazy
    stores (``VolumeStore``) when the run trains from them."""
    if not cases:
        return []
    if lazy:
        return [VolumeStore.open(folder) for folder in store_folders(cfg, cases, info).values()]
    items = [{IMAGE: str(c.image), LABEL: str(c.label)} for c in cases]
    return CacheDataset(items, build_transforms(cfg, train=False), cache_rate=1.0, progress=False)
