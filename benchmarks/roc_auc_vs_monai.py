"""ROC AUC of one DRIVE-sized image: ours (``metrics.roc_auc``, ranks) against MONAI's ``compute_roc_auc``.

    python benchmarks/roc_auc_vs_monai.py

A seeded 565 x 584 probability map with 12 % foreground; median seconds of 5 calls each, alternating, and the
values: MONAI with float64 labels (equal to ours) and with float32 labels (which it sums in)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_roc_auc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.metrics import roc_auc  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    n = 565 * 584
    ref = rng.random(n) < 0.12
    prob = np.clip(np.where(ref, rng.normal(0.7, 0.2, n), rng.normal(0.3, 0.2, n)), 0, 1).astype(np.float32)
    scores, labels64, labels32 = (torch.as_tensor(prob), torch.as_tensor(ref, dtype=torch.float64),
                                  torch.as_tensor(ref, dtype=torch.float32))
    calls = {"ours": lambda: roc_auc(prob, ref),
             "monai, float64 labels": lambda: compute_roc_auc(scores, labels64),
             "monai, float32 labels": lambda: compute_roc_auc(scores, labels32)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    values = {}
    for _ in range(5):
        for name, call in calls.items():
            start = time.perf_counter()
            values[name] = float(call())
            times[name].append(time.perf_counter() - start)
    for name in calls:
        print(f"{name}: {statistics.median(times[name]):.3f} s, AUC {values[name]:.10f} "
              f"(|difference to ours| {abs(values[name] - values['ours']):.1e})")
    ratio = statistics.median(times["monai, float64 labels"]) / statistics.median(times["ours"])
    print(f"MONAI / ours: {ratio:.1f}x the time")


if __name__ == "__main__":
    main()
