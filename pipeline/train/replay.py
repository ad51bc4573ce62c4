"""Step-exact replay of an interrupted epoch.

Every random draw of an epoch (case order, crops, flips, augmentation) comes from
generators seeded at the epoch's start from (``train.seed``, rank, epoch) through
MONAI's public ``set_random_state``. An epoch stopped after step k is therefore
redrawn from its start on resume, and its first k steps are drawn again without
training: the run continues with exactly the crops it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from monai.transforms import Compose


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed for one rank's epoch, independent across (seed, rank, epoch)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def seed_epoch(transform: Compose, generator: torch.Generator, seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the random transforms and the loader's case order for ``epoch``."""
    value = epoch_seed(seed, epoch, rank)
    transform.set_random_state(seed=value)
    generator.manual_seed(value)


@dataclass
class Replay:
    """Steps of the resumed epoch already trained (drawn again, not trained) and their losses."""

    skip: int = 0
    losses: list[float] = field(default_factory=list)


def replay_from(checkpoint: dict, world_size: int = 1) -> Replay:
    """What to replay after ``checkpoint``: its interrupted epoch's finished steps, when it was
    written by as many ranks as resume it (other ranks share the cases differently: redo the epoch)."""
    partial = checkpoint.get("partial")
    if partial is None or int(partial.get("world_size", 1)) != world_size:
        return Replay()
    return Replay(int(partial["step"]), [float(v) for v in partial["losses"]])
