"""Training step speed: plain PyTorch loops vs our loop, same model, loss, optimiser and crops.

    python benchmarks/train_speed.py [--data data/demo] [--steps 10] [--epochs 3]

The demo's residual UNet, Dice + CE, SGD, batch 2 of 112 x 112 x 80. Three loops, each
timed the same way (seconds per step, median over ``--epochs`` epochs of ``--steps``
steps after one warm-up epoch; the loops take turns epoch by epoch, so the machine's
drift hits each alike):

- plain PyTorch, fp32, default (contiguous) memory layout, over crops pre-loaded as tensors;
- plain PyTorch with our precision and layout: bf16 autocast (where the CPU runs it
  natively) and channels-last, over the same pre-loaded crops;
- ours: ``pipeline.train.loop.train_one_epoch`` over the cached dataset and thread loader
  that ``train.py`` uses (so its time includes waiting for data, which is reported).

Prints both ratios, the share of our step spent waiting for data, and GFLOP/s against a
measured matmul peak.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models3d.__main__ import count_macs
from pipeline.config import load_config
from pipeline.data.layouts import load_dataset
from pipeline.data.splits import split_cases
from pipeline.runtime import autocast, resolve_precision
from pipeline.train.loaders import training_loader
from pipeline.train.loop import train_one_epoch
from pipeline.train.losses import build_loss
from pipeline.train.state import TrainState


def peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def new_state(cfg, dataset, amp) -> TrainState:
    """A fresh network (seed 0, channels-last as training makes it) with its optimiser."""
    torch.manual_seed(0)
    return TrainState.create(cfg, dataset.labels, 1, torch.device("cpu"), amp)


def plain_epoch(state: TrainState, loss_fn, crops, amp, layout) -> float:
    """Seconds per step of one pass of a plain PyTorch loop over pre-loaded crops."""
    start = time.perf_counter()
    for image, label in crops:
        with autocast(torch.device("cpu"), amp):
            logits = state.model(image.to(memory_format=layout))
        loss = loss_fn(logits.float(), label)
        state.optimizer.zero_grad()
        loss.backward()
        state.optimizer.step()
    return (time.perf_counter() - start) / len(crops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per loop (after one warm-up)")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data}"])
    dataset = load_dataset(cfg.data.root, cfg.data)
    train, _, _ = split_cases(list(dataset.training), cfg.data, cfg.train.seed)
    device = torch.device("cpu")
    n_classes, batch = dataset.n_classes, cfg.train.batch_size * cfg.train.samples_per_volume

    with tempfile.TemporaryDirectory() as tmp:
        loader, transform = training_loader(cfg, train[: args.steps], Path(tmp), device)
        transform.set_random_state(seed=0)
        crops = [(b["image"].as_tensor().clone(), b["label"].as_tensor().clone()) for b in loader]
        amp = resolve_precision(cfg.train.precision, device)
        fp32 = new_state(cfg, dataset, None)
        fp32.model.to(memory_format=torch.contiguous_format)
        same, state = new_state(cfg, dataset, amp), new_state(cfg, dataset, amp)  # channels-last, as training makes it
        loss_fn = build_loss(cfg, n_classes)
        plain, plain_ours, ours, waits = [], [], [], []
        for epoch in range(args.epochs + 1):  # the three loops take turns, so drift of the machine hits each alike
            times = (plain_epoch(fp32, loss_fn, crops, None, torch.contiguous_format),
                     plain_epoch(same, loss_fn, crops, amp, torch.channels_last_3d))
            stats = train_one_epoch(state.model, loader, loss_fn, state.optimizer, state.scaler, amp, progress=False)
            if epoch:  # the first round warms up
                plain.append(times[0])
                plain_ours.append(times[1])
                ours.append(stats.seconds / stats.steps)
                waits.append(stats.data_fraction)

    flop = 3 * 2 * count_macs(new_state(cfg, dataset, None).model, crops[0][0][:1]) * batch  # fwd + bwd ~ 3x fwd
    t_plain, t_plain_ours, t_ours = statistics.median(plain), statistics.median(plain_ours), statistics.median(ours)
    peak32, peak16 = peak_gflops(torch.float32), peak_gflops(torch.bfloat16)
    peak = peak16 if amp == torch.bfloat16 else peak32
    precision = "bf16" if amp == torch.bfloat16 else "fp32"
    print(f"model {cfg.model.name} {cfg.model.channels}, batch {batch} x {tuple(cfg.train.patch_size)}, "
          f"{flop / 1e9:.0f} GFLOP per step, {torch.get_num_threads()} threads")
    print("| loop | s/step (median) | data wait | GFLOP/s | of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| plain PyTorch fp32, pre-loaded tensors | {t_plain:.3f} | 0 % (pre-loaded) | {flop / t_plain / 1e9:.0f} | "
          f"{flop / t_plain / 1e9 / peak32:.0%} of {peak32:.0f} fp32 |")
    print(f"| plain PyTorch {precision}, channels-last, pre-loaded tensors | {t_plain_ours:.3f} | 0 % (pre-loaded) | "
          f"{flop / t_plain_ours / 1e9:.0f} | {flop / t_plain_ours / 1e9 / peak:.0%} of {peak:.0f} {precision} |")
    print(f"| ours ({precision}, channels-last, cached data, thread loader) | {t_ours:.3f} | "
          f"{100 * statistics.median(waits):.1f} % | {flop / t_ours / 1e9:.0f} | {flop / t_ours / 1e9 / peak:.0%} of {peak:.0f} "
          f"{precision} |")
    print(f"ours / plain fp32: {t_plain / t_ours:.2f}x; ours / plain with the same precision and layout: "
          f"{t_plain_ours / t_ours:.2f}x (steps per second)")


if __name__ == "__main__":
    main()
