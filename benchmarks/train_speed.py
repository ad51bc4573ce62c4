"""Training step speed: a plain fp32 PyTorch loop vs our loop at default settings.

    python benchmarks/train_speed.py [--data data/demo] [--steps 20]

Same model (the demo's residual UNet), loss (Dice + CE), optimizer and crop size
(batch 2 of 112 x 112 x 80). (a) iterates over crops pre-loaded as tensors, fp32,
default memory format; (b) runs ``pipeline.training.train_one_epoch`` over the
cached dataset and loader that ``train.py`` uses, with the config's precision
(bf16 autocast where the CPU runs it natively) and channels-last. Prints seconds
per step (median over epochs of ``--steps`` steps), the ratio, the share of each
step spent waiting for data, and achieved GFLOP/s against a measured matmul peak.
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
from pipeline.runtime import resolve_precision
from pipeline.training import Run, _loaders, build_loss, build_optimizer, model_from_config, train_one_epoch


def peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up)")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data}"])
    dataset = load_dataset(cfg.data.root, cfg.data)
    train, _, _ = split_cases(list(dataset.training), cfg.data, cfg.train.seed)
    device = torch.device("cpu")
    n_classes, batch = dataset.n_classes, cfg.train.batch_size * cfg.train.samples_per_volume

    with tempfile.TemporaryDirectory() as tmp:
        loader, _, _ = _loaders(cfg, Run(Path(tmp), dataset, train[: args.steps], []), device)
        crops = [(b["image"].as_tensor().clone(), b["label"].as_tensor().clone()) for b in loader]

        # (a) plain PyTorch: fp32, contiguous, tensors already in memory
        torch.manual_seed(0)
        model = model_from_config(cfg, 1, n_classes)
        loss_fn = build_loss(cfg, n_classes)
        optimizer, _ = build_optimizer(model, cfg)
        plain = []
        for epoch in range(args.epochs + 1):
            start = time.perf_counter()
            for image, label in crops:
                loss = loss_fn(model(image), label)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if epoch:
                plain.append((time.perf_counter() - start) / len(crops))

        # (b) ours: the loader and train_one_epoch of train.py at the config's defaults
        torch.manual_seed(0)
        model = model_from_config(cfg, 1, n_classes).to(memory_format=torch.channels_last_3d)
        optimizer, _ = build_optimizer(model, cfg)
        amp = resolve_precision(cfg.train.precision, device)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        ours, waits = [], []
        for epoch in range(args.epochs + 1):
            stats = train_one_epoch(model, loader, build_loss(cfg, n_classes), optimizer, scaler, amp)
            if epoch:
                ours.append(stats.seconds / stats.steps)
                waits.append(stats.data_fraction)

    flop = 3 * 2 * count_macs(model_from_config(cfg, 1, n_classes), crops[0][0][:1]) * batch  # fwd + bwd ~ 3x fwd
    t_plain, t_ours = statistics.median(plain), statistics.median(ours)
    peak32, peak16 = peak_gflops(torch.float32), peak_gflops(torch.bfloat16)
    peak = peak16 if amp == torch.bfloat16 else peak32
    print(f"model {cfg.model.name} {cfg.model.channels}, batch {batch} x {tuple(cfg.train.patch_size)}, "
          f"{flop / 1e9:.0f} GFLOP per step, {torch.get_num_threads()} threads")
    print("| loop | s/step (median) | data wait | GFLOP/s | of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| plain PyTorch fp32, pre-loaded tensors | {t_plain:.3f} | 0 % (pre-loaded) | {flop / t_plain / 1e9:.0f} | "
          f"{flop / t_plain / 1e9 / peak32:.0%} of {peak32:.0f} fp32 |")
    print(f"| ours ({'bf16' if amp == torch.bfloat16 else 'fp32'}, channels-last, cached data) | {t_ours:.3f} | "
          f"{100 * statistics.median(waits):.1f} % | {flop / t_ours / 1e9:.0f} | {flop / t_ours / 1e9 / peak:.0%} of {peak:.0f} "
          f"{'bf16' if amp == torch.bfloat16 else 'fp32'} |")
    print(f"ours is {t_plain / t_ours:.2f}x faster per step")


if __name__ == "__main__":
    main()
