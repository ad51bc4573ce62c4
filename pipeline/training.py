"""Training: ``train_one_epoch``, ``validate``, ``fit``, and ``run_training`` around them.

A run lives in its own folder ``<output_dir>/<name>-<timestamp>/`` with the
resolved ``config.yaml``, ``split.json``, ``checkpoints/{last,best}.pt``,
``log.csv`` (one row per epoch) and ``loss.png``; ``<output_dir>/latest`` points
at the newest run. ``--resume`` continues a run in its own folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sized
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, PersistentDataset, ThreadDataLoader
from monai.losses import DiceCELoss
from monai.transforms import Compose, Randomizable
from torch import nn
from torch.distributed import get_backend as dist_backend
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import RandomSampler
from tqdm import tqdm

from models3d import build_model

from . import metrics
from .checkpoint import (
    capture_rng,
    capture_transform_rng,
    load_checkpoint,
    load_resume_checkpoint,
    restore_rng,
    restore_transform_rng,
    save_checkpoint,
)
from .config import Config, config_from_dict, config_to_dict, save_config
from .datasets import Case, Dataset, check_dataset, load_dataset, split_cases
from .distributed import Dist, any_rank, barrier, gather, on_main, shard
from .errors import UserError
from .inference import predict_volume
from .runtime import autocast, resolve_precision, seed_everything, select_device
from .transforms import IMAGE, LABEL, build_transforms
from .visualisation import plot_training_log

log = logging.getLogger(__name__)

LOG_FIELDS = ("epoch", "lr", "train_loss", "val_dice", "seconds")


@dataclass
class Run:
    """What ``fit`` needs besides the config: where to write and which cases to use."""

    dir: Path
    dataset: Dataset
    train: list[Case]
    val: list[Case]


def model_from_config(cfg: Config, in_channels: int, n_classes: int) -> nn.Module:
    """The configured network, with per-axis pooling planned from the training patch."""
    try:
        return build_model(cfg.model.name, in_channels, n_classes, channels=cfg.model.channels,
                           norm=cfg.model.norm, dropout=cfg.model.dropout, patch_size=cfg.train.patch_size)
    except ValueError as err:
        raise UserError(f"model.name / model.channels / train.patch_size: {err}") from None


def build_loss(cfg: Config, n_classes: int) -> nn.Module:
    """Weighted Dice + cross-entropy on softmax logits (MONAI DiceCELoss): logits (B, C, H, W, D),
    labels (B, 1, H, W, D). The Dice term is per crop or over the batch, with or without background."""
    weights = cfg.train.class_weights
    if weights is not None and len(weights) != n_classes:
        raise UserError(f"train.class_weights: expected {n_classes} weights (background first), got {len(weights)}")
    return DiceCELoss(
        to_onehot_y=True, softmax=True, lambda_dice=cfg.train.dice_weight, lambda_ce=cfg.train.ce_weight,
        include_background=cfg.train.dice_background, batch=cfg.train.batch_dice,
        weight=torch.tensor(weights, dtype=torch.float32) if weights is not None else None,
    )


def build_optimizer(model: nn.Module, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum and weight decay, and a per-epoch poly or step decay."""
    t = cfg.train
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                                nesterov=t.momentum > 0)
    if t.lr_schedule == "poly":
        scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=t.epochs, power=0.9)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.lr_step_epochs, gamma=t.lr_gamma)
    return optimizer, scheduler


@dataclass
class EpochStats:
    """One epoch (or the part of it that ran): finite losses, steps taken, wall and data-wait seconds."""

    losses: list[float]
    steps: int
    seconds: float
    data_seconds: float
    interrupted: bool = False

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else math.nan

    @property
    def data_fraction(self) -> float:
        return self.data_seconds / self.seconds if self.seconds else 0.0


def train_one_epoch(
    model: nn.Module,
    loader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
    skip: int = 0,
    should_stop: Callable[[], bool] = lambda: False,
    max_nonfinite: int = 10,
    progress: bool = True,
) -> EpochStats:
    """One pass over the loader (batches of (B, C, H, W, D) crops).

    The first ``skip`` batches are drawn but not trained on (a resumed epoch
    replays its random crops exactly); ``should_stop`` is asked after every
    step; a non-finite loss skips the step, and ``max_nonfinite`` of them in a
    row stop training with the files of the last batch named.
    """
    device = next(model.parameters()).device
    memory_format = torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format
    model.train()
    losses: list[float] = []
    steps, nonfinite, data_seconds, start = 0, 0, 0.0, time.perf_counter()
    batches = iter(tqdm(loader, desc="  steps", leave=False, unit="step", disable=not progress))
    while True:
        wait = time.perf_counter()
        batch = next(batches, None)
        data_seconds += time.perf_counter() - wait
        if batch is None:
            break
        steps += 1
        if steps <= skip:
            continue
        image = batch[IMAGE].as_tensor().to(device, non_blocking=True, memory_format=memory_format)
        label = batch[LABEL].as_tensor().to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(image)
        loss = loss_fn(logits.float(), label)
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            nonfinite = 0
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
        else:
            nonfinite += 1
            files = sorted({Path(str(f)).name for f in batch[IMAGE].meta.get("filename_or_obj", [])})
            log.warning("non-finite loss (%s) on a batch from %s: step skipped", loss.item(), ", ".join(files))
            if nonfinite >= max_nonfinite:
                raise UserError(f"{nonfinite} consecutive non-finite losses, last batch from {', '.join(files)}; "
                                "check those images for NaN/extreme values or lower train.lr")
        if should_stop():
            return EpochStats(losses, steps, time.perf_counter() - start, data_seconds, interrupted=True)
    return EpochStats(losses, steps, time.perf_counter() - start, data_seconds)


def validate(model: nn.Module, items, cfg: Config, n_classes: int, amp_dtype: torch.dtype | None,
             info: Dist = Dist()) -> float:
    """Mean foreground Dice over whole validation volumes (sliding window, argmax; no test-time
    flips or post-processing, so the score tracks the network alone and costs one pass).

    Under torchrun each rank scores its share of ``items`` and the mean is over all of them.
    """
    scores = []
    infer = dataclasses.replace(cfg.infer, tta=False)
    for item in tqdm(shard(items, info), desc="  validate", leave=False, unit="case", disable=not info.is_main):
        logits = predict_volume(model, item[IMAGE].as_tensor()[None], cfg.train.patch_size, infer, amp_dtype)
        pred = logits.argmax(dim=1)[0].cpu().numpy()
        ref = item[LABEL].as_tensor()[0].cpu().numpy()
        scores.append(float(np.mean([metrics.dice(pred == c, ref == c) for c in range(1, n_classes)])))
    return float(np.mean(gather(scores, info)))


def _random_generators(transform: Compose) -> list[np.random.RandomState]:
    """The random generators of a flat Compose's transforms and of the transforms they wrap.

    Not ``transform.flatten()``: building a Compose reseeds every child from a fresh seed.
    """
    found: dict[int, np.random.RandomState] = {}
    for t in transform.transforms:
        for obj in (t, *vars(t).values()):
            if isinstance(obj, Randomizable):
                found.setdefault(id(obj.R), obj.R)
    return list(found.values())


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _cache_bytes(item: dict) -> int:
    return sum(v.element_size() * v.numel() if isinstance(v, torch.Tensor) else getattr(v, "nbytes", 0)
               for v in item.values())


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


def _first_random(transform: Compose) -> int:
    return next(i for i, t in enumerate(transform.transforms) if isinstance(t, Randomizable))


def epoch_sampler(cases: Sized, volumes_per_epoch: int | None, generator: torch.Generator,
                  world_size: int = 1) -> RandomSampler:
    """The order in which one epoch draws this rank's training cases (indices into ``cases``).

    Unset: one permutation of the cases (what ``shuffle=True`` draws). Otherwise this rank's
    share of ``volumes_per_epoch`` draws without replacement: a random subset when fewer than the
    cases, whole permutations and then a subset when more.
    """
    per_rank = None if volumes_per_epoch is None else math.ceil(volumes_per_epoch / world_size)
    return RandomSampler(cases, num_samples=per_rank, generator=generator)


def _loaders(cfg: Config, run: Run, device: torch.device, info: Dist = Dist()):
    """Training loader over this rank's (padded) share of the cases, and the validation items."""
    seed = cfg.train.seed + info.rank  # each rank draws its own crops
    train_tf = build_transforms(cfg, train=True)
    train_tf.set_random_state(seed=seed)
    items = [{IMAGE: str(c.image), LABEL: str(c.label)} for c in shard(run.train, info, pad=True)]
    train_ds = cached_dataset(items, train_tf, cfg, run.dir / "cache" / f"rank{info.rank}" if info.enabled else run.dir / "cache")
    generator = torch.Generator().manual_seed(seed)
    sampler = epoch_sampler(train_ds, cfg.train.volumes_per_epoch, generator, info.world_size)
    if device.type == "cuda":
        loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=cfg.data.workers,
                            pin_memory=True, generator=generator, persistent_workers=cfg.data.workers > 0)
    else:  # threads: worker processes would fight the compute threads for 2 cores
        loader = ThreadDataLoader(train_ds, batch_size=cfg.train.batch_size, sampler=sampler, num_workers=0,
                                  buffer_size=1, generator=generator)
    val_items = CacheDataset([{IMAGE: str(c.image), LABEL: str(c.label)} for c in run.val],
                             build_transforms(cfg, train=False), cache_rate=1.0, progress=False) if run.val else []
    return loader, val_items, train_tf


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a resumable checkpoint."""


@contextlib.contextmanager
def stop_requests():
    """Yield a callable that turns true once SIGTERM or SIGINT arrives (main thread only)."""
    requested = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        requested.append(signum)
        log.warning("%s received: saving after the current step", signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_room(folder: Path, model: nn.Module) -> None:
    """Room for a few checkpoints (weights and optimizer state each), else a clear error."""
    checkpoint = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    free = shutil.disk_usage(folder).free
    if free < 4 * checkpoint + 50 * 2**20:
        raise UserError(f"{folder}: only {free / 2**20:.0f} MB free, training needs about "
                        f"{(4 * checkpoint) / 2**20 + 50:.0f} MB for checkpoints; free space or set output_dir")


def _last_logged_epoch(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, newline="", encoding="utf-8") as f:
        return max((int(r["epoch"]) for r in csv.DictReader(f)), default=0)


def _complete_log(path: Path, row: dict | None) -> None:
    """Append the checkpoint's own log row when the process died between saving and logging."""
    if row is not None and int(row["epoch"]) > _last_logged_epoch(path):
        _append_log(path, row)


def _restore_draws(resume: dict, cfg: Config, train_tf: Compose, loader, info: Dist) -> tuple[int, list[float]]:
    """Put the random draws (crops, flips, case order) where the checkpoint left them.

    Returns how many steps of the current epoch to replay without training and
    the losses of those steps. Under torchrun rank 0's states do not fit other
    ranks (or another world size), so ranks are reseeded and an interrupted
    epoch is redone from its start.
    """
    generators = _random_generators(train_tf)
    if info.enabled:
        reseed = cfg.train.seed + 1000 * int(resume["epoch"]) + info.rank
        train_tf.set_random_state(seed=reseed)
        loader.generator.manual_seed(reseed)
        return 0, []
    restore_rng(resume["rng"], generators)
    loader.generator.set_state(resume["loader_rng"])
    partial = resume.get("partial")
    if partial is None:
        return 0, []
    restore_transform_rng(partial["transforms_rng"], generators)  # the interrupted epoch from its start
    loader.generator.set_state(partial["loader_rng"])
    return int(partial["step"]), [float(v) for v in partial["losses"]]


def fit(cfg: Config, run: Run, resume: dict | None = None, info: Dist = Dist()) -> float:
    """Train for ``cfg.train.epochs`` epochs; returns the best validation Dice.

    Writes ``checkpoints/last.pt`` every epoch (keeping the previous one as
    ``last.prev.pt``), ``best.pt`` on improvement, appends ``log.csv`` and redraws
    ``loss.png``. On SIGTERM/SIGINT it saves a checkpoint that resumes at the
    exact step and raises TrainingInterrupted. Under torchrun the model is
    wrapped in DistributedDataParallel and only rank 0 writes.
    """
    device = info.device() if info.enabled else select_device()
    amp_dtype = resolve_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # same initial weights on every rank
    n_classes = run.dataset.n_classes
    net = model_from_config(cfg, len(run.dataset.modalities), n_classes)
    if info.enabled and cfg.train.sync_batchnorm:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last_3d)
    _check_room(run.dir, net)
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if info.enabled else net
    loss_fn = build_loss(cfg, n_classes).to(device)
    optimizer, scheduler = build_optimizer(net, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loader, val_items, train_tf = _loaders(cfg, run, device, info)
    generators = _random_generators(train_tf)
    if info.enabled:
        crops = info.world_size * cfg.train.batch_size * cfg.train.samples_per_volume
        log.info("torchrun: %d ranks (%s), effective batch %d crops per step, lr %g (not scaled)",
                 info.world_size, dist_backend(), crops, cfg.train.lr)

    start_epoch, best, skip, earlier_losses = 1, -math.inf, 0, []
    if resume is not None:
        net.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if isinstance(scheduler, torch.optim.lr_scheduler.PolynomialLR):
            scheduler.total_iters = cfg.train.epochs  # train.epochs may have been raised for the resumed run
        scaler.load_state_dict(resume["scaler"])
        start_epoch, best = int(resume["epoch"]) + 1, float(resume["best_metric"])
        skip, earlier_losses = _restore_draws(resume, cfg, train_tf, loader, info)
        if info.is_main:
            _complete_log(run.dir / "log.csv", resume.get("log_row"))
        log.info("resuming %s at epoch %d%s (best val Dice so far %.4f)", run.dir, start_epoch,
                 f", step {skip + 1}" if skip else "", best)

    per_epoch = cfg.train.volumes_per_epoch
    log.info("training %s on %s (%s), %d train / %d val cases, %d epochs%s",
             cfg.model.name, device, "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
             len(run.train), len(run.val), cfg.train.epochs, "" if per_epoch is None else f" of {per_epoch} volumes")
    ckpt_dir = run.dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    main = info.is_main

    def state(epoch: int, partial: dict | None = None, log_row: dict | None = None) -> dict:
        return {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "best_metric": best,
            "rng": capture_rng(generators), "loader_rng": loader.generator.get_state(), "partial": partial,
            "log_row": log_row, "config": config_to_dict(cfg),
            "labels": {str(k): v for k, v in run.dataset.labels.items()}, "in_channels": len(run.dataset.modalities),
        }

    epochs = tqdm(range(start_epoch, cfg.train.epochs + 1), desc="epochs", unit="epoch",
                  initial=start_epoch - 1, total=cfg.train.epochs, disable=not main)
    with stop_requests() as should_stop, warnings.catch_warnings():
        # all-background cases are named once by the dataset check; MONAI would warn on every crop
        warnings.filterwarnings("ignore", message="Num foregrounds 0")
        # DDP + channels-last: 1x1x1 kernels have ambiguous strides; harmless, said once per backward
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        for epoch in epochs:
            epoch_start = {"transforms_rng": capture_transform_rng(generators), "loader_rng": loader.generator.get_state()}
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            stop = (lambda: any_rank(should_stop(), info)) if info.enabled else should_stop
            stats = train_one_epoch(model, loader, loss_fn, optimizer, scaler, amp_dtype, skip, stop,
                                    cfg.train.max_nonfinite_steps, progress=main)
            stats.losses[:0], earlier_losses, skip = earlier_losses, [], 0
            if stats.interrupted:
                partial = {**epoch_start, "step": stats.steps, "losses": stats.losses}
                if main:
                    save_checkpoint(state(epoch - 1, partial=partial), ckpt_dir / "last.pt", keep_previous=True)
                barrier(info)
                raise TrainingInterrupted(f"stopped in epoch {epoch} after step {stats.steps}; state saved in "
                                          f"{ckpt_dir / 'last.pt'}; continue with: python train.py --resume {run.dir}")
            log.debug("epoch %d: %d steps, %.2f s/step, %.1f %% waiting for data", epoch, stats.steps,
                      stats.seconds / max(stats.steps, 1), 100 * stats.data_fraction)
            scheduler.step()
            val_dice = None
            if val_items and (epoch % cfg.train.val_every == 0 or epoch == cfg.train.epochs):
                val_dice = validate(net, val_items, cfg, n_classes, amp_dtype, info)
            improved = val_dice is not None and val_dice > best
            if improved:
                best = val_dice
            row = {"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{stats.loss:.5f}",
                   "val_dice": "" if val_dice is None else f"{val_dice:.5f}",
                   "seconds": f"{time.perf_counter() - start:.1f}"}
            if main:
                checkpoint = state(epoch, log_row=row)
                save_checkpoint(checkpoint, ckpt_dir / "last.pt", keep_previous=True)
                if improved or (not val_items and epoch == cfg.train.epochs):
                    save_checkpoint(checkpoint, ckpt_dir / "best.pt")
                if epoch > _last_logged_epoch(run.dir / "log.csv"):
                    _append_log(run.dir / "log.csv", row)
                else:  # retrained after falling back to an older checkpoint: log.csv is append-only
                    log.warning("epoch %d was trained again; log.csv keeps its first row for it", epoch)
                plot_training_log(run.dir / "log.csv", run.dir / "loss.png")
            epochs.set_postfix(loss=f"{stats.loss:.4f}", val_dice="-" if val_dice is None else f"{val_dice:.4f}")
    if main and not (ckpt_dir / "best.pt").exists():  # no validation improved: keep the final weights as best
        save_checkpoint(load_checkpoint(ckpt_dir / "last.pt"), ckpt_dir / "best.pt")
    barrier(info)
    if info.enabled:
        checksum = sum(float(p.detach().double().sum()) for p in net.parameters())
        log.warning("rank %d/%d: parameter checksum %.10e", info.rank, info.world_size, checksum)
    return best


def new_run_dir(cfg: Config) -> Path:
    """A fresh ``<output_dir>/<name>-<timestamp>`` folder (never an existing one), ``latest`` pointed at it."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output_dir {out}: cannot create ({err.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output_dir {out}: not writable; set output_dir to a folder you can write")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = out / (f"{cfg.name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    link = out / "latest"
    tmp = out / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)
    return run_dir


def run_training(cfg: Config, resume_dir: str | Path | None = None, info: Dist = Dist()) -> Path:
    """Check the data, make (or reopen) the run folder, and fit. Returns the run folder.

    Under torchrun rank 0 alone checks the data and writes the run folder; the
    other ranks receive the outcome (or stop quietly on its error, which rank 0 reports).
    """
    run, resume = on_main(lambda: prepare_run(cfg, resume_dir), info)
    if run is not None and (resume is None or not _finished(cfg, resume)):
        fit(cfg, run, resume, info)
    return Path(run.dir if run is not None else resume_dir)


def _finished(cfg: Config, resume: dict) -> bool:
    return int(resume["epoch"]) >= cfg.train.epochs and resume.get("partial") is None


def prepare_run(cfg: Config, resume_dir: str | Path | None) -> tuple[Run | None, dict | None]:
    """Checked data and a new (or reopened) run folder with config.yaml and split.json."""
    resume = None
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        resume = load_resume_checkpoint(run_dir / "checkpoints" / "last.pt")
        saved = config_from_dict(resume["config"], f"{run_dir}/checkpoints/last.pt")
        if (saved.model, saved.train.patch_size, saved.data.root) != (cfg.model, cfg.train.patch_size, cfg.data.root):
            raise UserError(f"{run_dir}: checkpoint was made with model {saved.model}, patch "
                            f"{saved.train.patch_size} and data {saved.data.root}; a resumed run keeps those")
        if _finished(cfg, resume):
            log.info("%s already finished %d epochs; raise train.epochs to train longer", run_dir, cfg.train.epochs)
            return None, resume
        save_config(cfg, run_dir / "config.yaml")

    dataset = load_dataset(cfg.data.root, cfg.data)
    report = check_dataset(dataset, cfg.data)
    for problem in report.problems:
        if problem.severity == "warning":
            log.warning("%s", problem)
    if report.errors:
        first = report.errors[0]
        more = len(report.errors) - 1
        raise UserError(f"{first.file}: {first.message}" + (f" ({first.hint})" if first.hint else "")
                        + (f"; {more} more problem(s): see `python -m pipeline.check --data {cfg.data.root}`" if more else ""))
    if not dataset.training:
        raise UserError(f"{cfg.data.root}: no training cases")

    if resume is None:
        train, val, held_out = split_cases(list(dataset.training), cfg.data, cfg.train.seed)
        test = [c for c in dataset.test if c.label is not None] or held_out or val
        if not test:
            log.warning("no held-out cases: test.py will evaluate the training cases; use --data for real test data")
            test = train
        run_dir = new_run_dir(cfg)
        save_config(cfg, run_dir / "config.yaml")
        split = {"root": str(dataset.root), "train": [c.id for c in train], "val": [c.id for c in val],
                 "test": [c.id for c in test]}
        (run_dir / "split.json").write_text(json.dumps(split, indent=2), encoding="utf-8")
        log.info("run folder %s", run_dir)
    else:
        split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
        train = [dataset.case(i) for i in split["train"]]
        val = [dataset.case(i) for i in split["val"]]
    return Run(run_dir, dataset, train, val), resume
