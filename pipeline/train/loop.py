"""The training loop: ``train_one_epoch`` and ``fit``.

``fit`` sets up (``setup``), then for each epoch: seed its random draws, train,
validate, checkpoint, log. Stopping on a signal saves a checkpoint that resumes
at the exact step (``replay``); under torchrun the network is wrapped in
DistributedDataParallel and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributed import get_backend as dist_backend
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoint import check_room, load_checkpoint, save_checkpoint
from ..config import Config
from ..data.cases import Case, Dataset
from ..data.store import lazy_cases
from ..data.transforms import IMAGE, LABEL
from ..distributed import Dist, any_rank, barrier
from ..errors import UserError
from ..predict.predictor import Predictor
from ..runtime import autocast, input_layout, resolve_precision, seed_everything, select_device
from . import history
from .budget_clock import BudgetClock
from .loaders import training_loader, validation_items
from .losses import build_loss
from .replay import Replay, replay_from, seed_epoch
from .signals import TrainingInterrupted, stop_requests
from .state import TrainState
from .validation import validate

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What ``fit`` needs besides the config: where to write and which cases to use."""

    dir: Path
    dataset: Dataset
    train: list[Case]
    val: list[Case]


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


def train_step(model: nn.Module, batch: dict, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
          scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """One optimiser step on a batch of crops (B, C, H, W, D); returns the loss (not stepped when
    it is not finite)."""
    device = next(model.parameters()).device
    memory_format = input_layout(model) if device.type == "cpu" else torch.contiguous_format
    image = batch[IMAGE].as_tensor().to(device, non_blocking=True, memory_format=memory_format)
    label = batch[LABEL].as_tensor().to(device, non_blocking=True)
    with autocast(device, amp_dtype):
        logits = model(image)
    loss = loss_fn(logits, label)  # in float32, per output of a deeply supervised network
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss


def train_one_epoch(model: nn.Module, loader, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None, skip: int = 0,
                    should_stop: Callable[[], bool] = lambda: False, max_nonfinite: int = 10,
                    progress: bool = True, after_step: Callable[[], None] = lambda: None) -> EpochStats:
    """One pass over the loader (batches of (B, C, H, W, D) crops).

    The first ``skip`` batches are drawn but not trained on (a resumed epoch
    replays its random crops exactly); ``after_step`` is called and ``should_stop`` asked after every
    step; a non-finite loss skips the step, and ``max_nonfinite`` of them in a
    row stop training with the files of the last batch named.
    """
    model.train()
    losses: list[float] = []
    steps, nonfinite, data_seconds, start = 0, 0, 0.0, time.perf_counter()
    batches = iter(tqdm(loader, desc="  steps", leave=False, unit="step", disable=not progress))
    while True:
        wait = time.perf_counter()
        batch = next(batches, None)
        data_seconds += time.perf_counter() - wait
        if batch is None:
            return EpochStats(losses, steps, time.perf_counter() - start, data_seconds)
        steps += 1
        if steps <= skip:
            continue
        loss = train_step(model, batch, loss_fn, optimizer, scaler, amp_dtype)
        nonfinite = 0 if torch.isfinite(loss) else nonfinite + 1
        if nonfinite:
            _report_nonfinite(loss, batch, nonfinite, max_nonfinite)
        else:
            losses.append(loss.item())
        after_step()
        if should_stop():
            return EpochStats(losses, steps, time.perf_counter() - start, data_seconds, interrupted=True)


def _report_nonfinite(loss: torch.Tensor, batch: dict, count: int, limit: int) -> None:
    files = sorted({Path(str(f)).name for f in batch[IMAGE].meta.get("filename_or_obj", [])})
    log.warning("non-finite loss (%s) on a batch from %s: step skipped", loss.item(), ", ".join(files))
    if count >= limit:
        raise UserError(f"{count} consecutive non-finite losses, last batch from {', '.join(files)}; "
                        "check those images for NaN/extreme values or lower train.lr")


@dataclass
class Session:
    """What ``fit`` works with: the state, the (possibly DDP-wrapped) network, loss, data, predictor."""

    state: TrainState
    model: nn.Module
    loss_fn: nn.Module
    loader: object
    transform: object
    val_items: list
    predictor: Predictor
    amp_dtype: torch.dtype | None


def setup(cfg: Config, run: Run, info: Dist = Dist()) -> Session:
    """Build the network (same initial weights on every rank), loss, loaders and predictor."""
    device = info.device() if info.enabled else select_device()
    amp_dtype = resolve_precision(cfg.train.precision, device)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    labels = run.dataset.labels
    state = TrainState.create(cfg, labels, len(run.dataset.modalities), device, amp_dtype,
                              sync_batchnorm=info.enabled and cfg.train.sync_batchnorm)
    check_room(run.dir, state.model)
    (run.dir / "checkpoints").mkdir(exist_ok=True)
    model = state.model
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        crops = info.world_size * cfg.train.batch_size * cfg.train.samples_per_volume
        log.info("torchrun: %d ranks (%s), effective batch %d crops per step, lr %g (not scaled)",
                 info.world_size, dist_backend(), crops, cfg.train.lr)
    lazy = lazy_cases(cfg, run.train + run.val)
    loader, transform = training_loader(cfg, run.train, run.dir / "cache", device, info, lazy)
    loss_fn = build_loss(cfg, run.dataset.n_classes, state.model.supervised_outputs).to(device)
    return Session(state, model, loss_fn, loader, transform,
                   validation_items(cfg, run.val, lazy, info), Predictor(state.model, cfg, labels), amp_dtype)


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        # all-background cases are named once by the dataset check; MONAI would warn on every crop
        warnings.filterwarnings("ignore", message="Num foregrounds 0")
        # DDP + channels-last: 1x1x1 kernels have ambiguous strides; harmless, said once per backward
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        yield


def fit(cfg: Config, run: Run, resume: dict | None = None, info: Dist = Dist(), started: float | None = None) -> float:
    """Train for ``cfg.train.epochs`` epochs (continuing ``resume``); returns the best validation Dice.
    ``started``: when ``train.py`` started (``time.monotonic``), the start of the budget's clock.

    Writes ``checkpoints/last.pt`` every epoch (keeping the previous one as ``last.prev.pt``),
    ``best.pt`` on improvement, appends ``log.csv`` and redraws ``loss.png``. On SIGTERM/SIGINT
    it saves a checkpoint that resumes at the exact step and raises TrainingInterrupted.
    """
    s, replay, t = setup(cfg, run, info), Replay(), cfg.train
    if resume is not None:
        s.state.restore(resume, t.epochs, global_rng=not info.enabled)
        replay = replay_from(resume, info.world_size)
        if info.is_main and resume.get("log_row") is not None:
            history.append_row(run.dir / "log.csv", resume["log_row"])  # died between saving and logging
        log.info("resuming %s at epoch %d%s (best val Dice so far %.4f)", run.dir, s.state.epoch + 1,
                 f", step {replay.skip + 1}" if replay.skip else "", s.state.best)
    log.info("training %s on %s (%s), %d train / %d val cases, %d epochs%s", cfg.model.name,
             next(s.model.parameters()).device, str(s.amp_dtype or "fp32").replace("torch.", ""), len(run.train),
             len(run.val), t.epochs, "" if t.volumes_per_epoch is None else f" of {t.volumes_per_epoch} volumes")
    epochs = tqdm(desc="epochs", unit="epoch", initial=s.state.epoch, total=t.epochs, disable=not info.is_main)
    clock = BudgetClock.of_run(t, run.dir, started, s.state.seconds if resume else None, bool(s.val_items), info)
    total, epoch = t.epochs, s.state.epoch
    with stop_requests() as requested, _quiet_warnings():
        should_stop = (lambda: any_rank(requested(), info)) if info.enabled else requested  # ranks stop together
        while epoch < total:
            epoch += 1
            start, lr = time.perf_counter(), s.state.optimizer.param_groups[0]["lr"]
            seed_epoch(s.transform, s.loader.generator, t.seed, epoch, info.rank)
            stats = train_one_epoch(s.model, s.loader, s.loss_fn, s.state.optimizer, s.state.scaler, s.amp_dtype,
                                    replay.skip, should_stop, t.max_nonfinite_steps, info.is_main, clock.tick)
            stats.losses[:0], replay = replay.losses, Replay()
            if stats.interrupted:
                s.state.seconds = clock.elapsed()
                _save_interrupted(s.state, run, epoch, stats, info)
            s.state.scheduler.step()
            s.state.epoch = epoch
            due = s.val_items and (epoch % t.val_every == 0 or epoch == total)
            validated = time.perf_counter()
            val_dice = validate(s.predictor, s.val_items, run.dataset.n_classes, info) if due else None
            validation_s = time.perf_counter() - validated if due else None
            s.state.seconds = clock.elapsed()
            _end_epoch(s.state, run, _log_row(epoch, lr, stats, val_dice, start), val_dice, info)
            epochs.update(1)
            epochs.set_postfix(loss=f"{stats.loss:.4f}", val_dice="-" if val_dice is None else f"{val_dice:.4f}")
            total = epochs.total = clock.refit(cfg, run.dir, s.state, epoch, total, validation_s, info,
                                               bool(s.val_items))
    epochs.close()
    _finish(s.state, run, bool(s.val_items), info)
    return s.state.best


def _log_row(epoch: int, lr: float, stats: EpochStats, val_dice: float | None, start: float) -> dict:
    log.debug("epoch %d: %d steps, %.2f s/step, %.1f %% waiting for data", epoch, stats.steps,
              stats.seconds / max(stats.steps, 1), 100 * stats.data_fraction)
    return {"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{stats.loss:.5f}",
            "val_dice": "" if val_dice is None else f"{val_dice:.5f}", "seconds": f"{time.perf_counter() - start:.1f}"}


def _save_interrupted(state: TrainState, run: Run, epoch: int, stats: EpochStats, info: Dist) -> None:
    """Save a checkpoint that resumes at the step after the last one trained, then stop."""
    path = run.dir / "checkpoints" / "last.pt"
    if info.is_main:
        partial = {"step": stats.steps, "losses": stats.losses, "world_size": info.world_size}
        save_checkpoint(state.checkpoint(partial=partial), path, keep_previous=True)
    barrier(info)
    raise TrainingInterrupted(f"stopped in epoch {epoch} after step {stats.steps}; state saved in {path}; "
                              f"continue with: python train.py --resume {run.dir}")


def _end_epoch(state: TrainState, run: Run, row: dict, val_dice: float | None, info: Dist) -> None:
    """Keep the best score, write ``last.pt`` (and ``best.pt`` on improvement), log and plot."""
    improved = val_dice is not None and val_dice > state.best
    if improved:
        state.best = val_dice
    if not info.is_main:
        return
    checkpoints = run.dir / "checkpoints"
    checkpoint = state.checkpoint(log_row=row)
    save_checkpoint(checkpoint, checkpoints / "last.pt", keep_previous=True)
    if improved:
        save_checkpoint(checkpoint, checkpoints / "best.pt")
    if not history.append_row(run.dir / "log.csv", row):  # retrained after falling back to an older checkpoint
        log.warning("epoch %s was trained again; log.csv keeps its first row for it", row["epoch"])
    history.plot(run.dir)


def _finish(state: TrainState, run: Run, validating: bool, info: Dist) -> None:
    """``best.pt`` is the final weights when nothing chose another: no validation cases (whatever epoch
    count the budget clock settled on), or no validation that improved."""
    checkpoints = run.dir / "checkpoints"
    if info.is_main and (not validating or not (checkpoints / "best.pt").exists()):
        save_checkpoint(load_checkpoint(checkpoints / "last.pt"), checkpoints / "best.pt")
    barrier(info)
    if info.enabled:
        checksum = sum(float(p.detach().double().sum()) for p in state.model.parameters())
        log.warning("rank %d/%d: parameter checksum %.10e", info.rank, info.world_size, checksum)
