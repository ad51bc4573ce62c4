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

Prints both ratios, the share of our step spent waiting for data, and GFLOP/s (forward and
backward counted by ``torch.utils.flop_counter``) against the matmul peak measured in the same
run at the step's precision (bf16 where the CPU runs it natively, else fp32). Then where a
step's time goes: ``torch.profiler`` over ``--profile-steps`` steps of our ``train_step``,
the operators by self CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import load_config
from pipeline.data.layouts import load_dataset
from pipeline.data.splits import split_cases
from pipeline.runtime import autocast, cpu_model, resolve_precision
from pipeline.train.loaders import training_loader
from pipeline.train.loop import train_one_epoch, train_step
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


def step_flop(state: TrainState, loss_fn, image: torch.Tensor, label: torch.Tensor) -> int:
    """Floating-point operations of one forward and backward pass (convolutions and matmuls, as
    ``torch.utils.flop_counter`` counts them; the memory-bound operators count none)."""
    with FlopCounterMode(display=False) as counter:
        loss_fn(state.model(image).float(), label).backward()
    state.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def profile_table(state: TrainState, loss_fn, batches: list[dict], amp, rows: int = 12) -> str:
    """Markdown table: the operators of ``train_step`` over ``batches`` by self CPU time, with
    their share of the profiled total and their number of calls."""
    train_step(state.model, batches[0], loss_fn, state.optimizer, state.scaler, amp)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches[1:]:
            train_step(state.model, batch, loss_fn, state.optimizer, state.scaler, amp)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    lines = ["| operator | self CPU share | self CPU (ms / step) | calls / step |", "| --- | ---: | ---: | ---: |"]
    steps = len(batches) - 1
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:rows]:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / total:.0%} | {e.self_cpu_time_total / 1e3 / steps:.0f} | "
                     f"{e.count // steps} |")
    return "\n".join(lines)


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
    parser.add_argument("--profile-steps", type=int, default=3, help="steps profiled by operator (after one warm-up)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="configuration keys, e.g. model.norm=batch to measure a lever alone")
    args = parser.parse_args()
    cfg = load_config(args.config, [f"data.root={args.data}", *args.overrides])
    dataset = load_dataset(cfg.data.root, cfg.data)
    train, _, _ = split_cases(list(dataset.training), cfg.data, cfg.train.seed)
    amp = resolve_precision(cfg.train.precision, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        loader, transform = training_loader(cfg, train[: args.steps], Path(tmp), torch.device("cpu"))
        transform.set_random_state(seed=0)
        batches = list(loader)
        times = timed_loops(cfg, dataset, loader, batches, amp, args.epochs)
        loss_fn = build_loss(cfg, dataset.n_classes)
        flop = step_flop(new_state(cfg, dataset, None), loss_fn, batches[0]["image"].as_tensor(),
                         batches[0]["label"].as_tensor())
        table = profile_table(new_state(cfg, dataset, amp), loss_fn, batches[: args.profile_steps + 1], amp)
    report(cfg, amp, flop, times)
    print(f"\nwhere a step of ours goes: torch.profiler over {args.profile_steps} steps, self CPU time by operator")
    print(table)


def timed_loops(cfg, dataset, loader, batches: list[dict], amp, epochs: int) -> dict[str, list[float]]:
    """Seconds per step of each loop per timed epoch (and our data wait), the loops taking turns."""
    crops = [(b["image"].as_tensor().clone(), b["label"].as_tensor().clone()) for b in batches]
    fp32 = new_state(cfg, dataset, None)
    fp32.model.to(memory_format=torch.contiguous_format)
    same, state = new_state(cfg, dataset, amp), new_state(cfg, dataset, amp)  # channels-last, as training makes it
    loss_fn = build_loss(cfg, dataset.n_classes)
    times: dict[str, list[float]] = {"plain": [], "plain_same": [], "ours": [], "wait": []}
    for epoch in range(epochs + 1):  # the three loops take turns, so drift of the machine hits each alike
        plain = plain_epoch(fp32, loss_fn, crops, None, torch.contiguous_format)
        plain_same = plain_epoch(same, loss_fn, crops, amp, torch.channels_last_3d)
        stats = train_one_epoch(state.model, loader, loss_fn, state.optimizer, state.scaler, amp, progress=False)
        if epoch:  # the first round warms up
            times["plain"].append(plain)
            times["plain_same"].append(plain_same)
            times["ours"].append(stats.seconds / stats.steps)
            times["wait"].append(stats.data_fraction)
    return times


def report(cfg, amp, flop: int, times: dict[str, list[float]]) -> None:
    """The table of the three loops against the matmul peak at their precision, and the ratios."""
    t_plain, t_same, t_ours = (statistics.median(times[k]) for k in ("plain", "plain_same", "ours"))
    peak32 = peak_gflops(torch.float32)
    peak = peak_gflops(torch.bfloat16) if amp == torch.bfloat16 else peak32
    precision = "bf16" if amp == torch.bfloat16 else "fp32"
    batch = cfg.train.batch_size * cfg.train.samples_per_volume
    print(f"{cpu_model()}, {torch.get_num_threads()} threads; model {cfg.model.name} {cfg.model.channels} "
          f"(norm {cfg.model.norm}), batch {batch} x {tuple(cfg.train.patch_size)}, {flop / 1e9:.0f} GFLOP per step "
          "(forward + backward, torch.utils.flop_counter)")
    print("| loop | s/step (median) | data wait | GFLOP/s | of matmul peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| plain PyTorch fp32, pre-loaded tensors | {t_plain:.3f} | 0 % (pre-loaded) | {flop / t_plain / 1e9:.0f} | "
          f"{flop / t_plain / 1e9 / peak32:.0%} of {peak32:.0f} fp32 |")
    print(f"| plain PyTorch {precision}, channels-last, pre-loaded tensors | {t_same:.3f} | 0 % (pre-loaded) | "
          f"{flop / t_same / 1e9:.0f} | {flop / t_same / 1e9 / peak:.0%} of {peak:.0f} {precision} |")
    print(f"| ours ({precision}, channels-last, cached data, thread loader) | {t_ours:.3f} | "
          f"{100 * statistics.median(times['wait']):.1f} % | {flop / t_ours / 1e9:.0f} | "
          f"{flop / t_ours / 1e9 / peak:.0%} of {peak:.0f} {precision} |")
    print(f"ours / plain fp32: {t_plain / t_ours:.2f}x; ours / plain with the same precision and layout: "
          f"{t_same / t_ours:.2f}x (steps per second)")


if __name__ == "__main__":
    main()
