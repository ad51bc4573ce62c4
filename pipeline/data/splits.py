"""Training / validation / test splits of a dataset's training cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import DataConfig
from ..errors import UserError
from .cases import Case


def every_fold(data: DataConfig) -> bool:
    """Whether the configuration asks for every fold of a k-fold cross-validation (``data.folds`` > 1,
    ``data.fold`` unset): one run folder, one fold after the other."""
    return data.folds > 1 and data.fold is None


def split_cases(cases: Sequence[Case], data: DataConfig, seed: int) -> tuple[list[Case], list[Case], list[Case]]:
    """(train, val, test) from the training cases: explicit ids, k-fold, or a seeded fraction."""
    by_id = {c.id: c for c in cases}
    def pick(ids: Sequence[str], key: str) -> list[Case]:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise UserError(f"{key}: unknown case id(s) {', '.join(unknown[:5])}; "
                            f"known: {', '.join(list(by_id)[:8])} ...")
        return [by_id[i] for i in ids]
    for key, ids in (("data.test_cases", data.test_cases), ("data.val_cases", data.val_cases)):
        repeated = sorted({i for i in ids or () if list(ids).count(i) > 1})
        if repeated:
            raise UserError(f"{key}: case id(s) {', '.join(repeated[:5])} listed more than once")
    shared = sorted(set(data.test_cases or ()) & set(data.val_cases or ()))
    if shared:
        raise UserError(f"data.val_cases and data.test_cases share {', '.join(shared[:5])}: a case that chooses the "
                        "checkpoint cannot also test it; list each case in one of them")
    test = pick(data.test_cases, "data.test_cases") if data.test_cases else []
    pool = [c for c in cases if c not in test]
    if data.val_cases is not None:
        val = pick(data.val_cases, "data.val_cases")
    elif data.folds > 1:
        if data.fold is None:
            raise UserError(f"data.folds={data.folds}: data.fold is not set; set it to train one fold, or run "
                            "train.py, which trains them all")
        if not 0 <= data.fold < data.folds:
            raise UserError(f"data.fold must be in 0..{data.folds - 1}, got {data.fold}")
        if data.folds > len(pool):
            raise UserError(f"data.folds={data.folds} but only {len(pool)} training cases")
        order = np.random.default_rng(seed).permutation(len(pool))
        val = [pool[i] for i in sorted(np.array_split(order, data.folds)[data.fold])]
    else:
        if not 0 <= data.val_fraction < 1:
            raise UserError(f"data.val_fraction must be in [0, 1), got {data.val_fraction}")
        order = np.random.default_rng(seed).permutation(len(pool))
        wanted = max(1, round(len(pool) * data.val_fraction))
        n_val = 0 if data.val_fraction == 0 or len(pool) < 2 else min(wanted, len(pool) - 1)
        val = [pool[i] for i in sorted(order[:n_val])]
    train = [c for c in pool if c not in val]
    if not train:
        raise UserError("no training cases left after taking out validation and test cases")
    return train, val, test
