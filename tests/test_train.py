"""The training stage: loss against hand computations, the epoch's case order, seeded replay,
and the state's checkpoint round trip."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import Config, TrainConfig, load_config
from pipeline.data.layouts import load_dataset
from pipeline.train.loaders import epoch_sampler, training_loader
from pipeline.train.losses import build_loss
from pipeline.train.replay import Replay, epoch_seed, replay_from, seed_epoch
from pipeline.train.state import TrainState
from conftest import REPO


def test_epoch_sampler_draws_distinct_cases_and_fixes_the_epoch_length():
    cases = list(range(5))

    def order(**kwargs) -> list[int]:
        return [int(i) for i in torch.utils.data.DataLoader(cases, batch_size=None, **kwargs)]

    shuffled = order(shuffle=True, generator=torch.Generator().manual_seed(3))
    for per_epoch in (None, len(cases)):  # unset or one per case: the order before the option existed
        generator = torch.Generator().manual_seed(3)
        assert order(sampler=epoch_sampler(cases, per_epoch, generator), generator=generator) == shuffled

    generator = torch.Generator().manual_seed(0)
    fewer = [list(epoch_sampler(cases, 3, generator)) for _ in range(40)]
    assert all(len(epoch) == 3 and len(set(epoch)) == 3 for epoch in fewer)
    assert set(itertools.chain(*fewer)) == set(cases)  # every case comes round across epochs

    more = list(epoch_sampler(cases, 7, generator))
    assert len(more) == 7 and sorted(more[:5]) == cases and len(set(more[5:])) == 2
    assert len(list(epoch_sampler(cases, 7, generator, world_size=2))) == 4  # this rank's share, rounded up


@pytest.mark.parametrize("weights", [None, (0.3, 1.7)], ids=["unweighted", "class-weights"])
@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
def test_dice_ce_loss_matches_a_hand_computation(background, batch, weights):
    """0.5 x Dice + 0.5 x CE as documented in ``build_loss``: class weights w scale each class's
    (1 - Dice) before the mean, and the cross-entropy is the w-weighted mean over voxels."""
    # two crops of 4 voxels, 2 classes; the second crop has no foreground
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0], [0.0, 1.0, 1.5, -2.0]],
                           [[1.0, 0.0, 3.0, -0.5], [0.5, 0.2, -1.0, 0.0]]]).reshape(2, 2, 4, 1, 1)
    label = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]]).reshape(2, 1, 4, 1, 1)
    cfg = Config(train=TrainConfig(dice_background=background, batch_dice=batch, class_weights=weights))

    w = np.ones(2) if weights is None else np.asarray(weights)
    prob = np.exp(logits.numpy()[..., 0, 0])
    prob /= prob.sum(axis=1, keepdims=True)  # (crop, class, voxel)
    onehot = np.stack([label.numpy()[:, 0, :, 0, 0] == c for c in (0, 1)], axis=1).astype(float)
    voxel_weight = (w[None, :, None] * onehot).sum(axis=1)  # w of each voxel's true class
    ce = (voxel_weight * -np.log((prob * onehot).sum(axis=1))).sum() / voxel_weight.sum()
    axes = (0, 2) if batch else 2  # batch Dice sums over the crops too
    overlap, total = (prob * onehot).sum(axis=axes), (prob + onehot).sum(axis=axes)
    dice = 1 - (2 * overlap + 1e-5) / (total + 1e-5)  # (class,) or (crop, class)
    if background:  # MONAI weights the Dice term only when it covers more than one class
        dice = dice * w
    dice = dice[..., 0 if background else 1:].mean()
    assert float(build_loss(cfg, 2)(logits, label)) == pytest.approx(0.5 * dice + 0.5 * ce, rel=1e-5)


def test_epoch_seeds_differ_across_epochs_ranks_and_seeds():
    seeds = {epoch_seed(s, e, r) for s in (0, 1) for e in range(1, 20) for r in (0, 1)}
    assert len(seeds) == 2 * 19 * 2 and all(0 <= v < 2**32 for v in seeds)
    assert epoch_seed(0, 3, 1) == epoch_seed(0, 3, 1)


def test_an_epoch_redraws_the_same_crops_after_reseeding(tiny_dataset, tmp_path):
    """Replay rests on this: seeding an epoch again gives the same case order and the same crops."""
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}"])
    cases = list(load_dataset(tiny_dataset, cfg.data).training)
    loader, transform = training_loader(cfg, cases, tmp_path / "cache", torch.device("cpu"))

    def epoch(number: int) -> list[torch.Tensor]:
        seed_epoch(transform, loader.generator, cfg.train.seed, number)
        return [batch["image"].as_tensor().clone() for batch in loader]

    first, other, again = epoch(1), epoch(2), epoch(1)
    assert len(first) == len(cases) and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_replay_resumes_a_partial_epoch_only_on_as_many_ranks():
    partial = {"partial": {"step": 3, "losses": [0.5, 0.4, 0.3], "world_size": 2}}
    assert replay_from(partial, world_size=2) == Replay(3, [0.5, 0.4, 0.3])
    assert replay_from(partial, world_size=1) == Replay()  # shared differently: redo the epoch
    assert replay_from({"partial": None}) == Replay()


def test_train_state_checkpoint_round_trip():
    cfg = load_config(REPO / "configs" / "smoke.yaml")
    labels = {0: "background", 1: "organ"}
    state = TrainState.create(cfg, labels, 1, torch.device("cpu"), None)
    state.model(torch.randn(1, 1, *cfg.train.patch_size)).sum().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.epoch, state.best = 4, 0.75
    checkpoint = state.checkpoint(partial={"step": 2, "losses": [1.0, 0.9], "world_size": 1})
    assert checkpoint["labels"] == {"0": "background", "1": "organ"} and checkpoint["in_channels"] == 1
    assert checkpoint["config"]["model"]["name"] == cfg.model.name
    torch.manual_seed(123)  # restore must bring the global random state back
    restored = TrainState.create(cfg, labels, 1, torch.device("cpu"), None)
    restored.restore(checkpoint, cfg.train.epochs)
    assert (restored.epoch, restored.best) == (4, 0.75)
    assert restored.scheduler.last_epoch == 1
    assert restored.optimizer.state_dict()["state"].keys() == state.optimizer.state_dict()["state"].keys()
    for a, b in zip(state.model.state_dict().values(), restored.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), checkpoint["rng"]["torch"])


@pytest.mark.slow
def test_a_finished_run_extended_with_more_epochs_trains_on_a_replanned_poly_decay(smoke_run, tmp_path):
    """Before: train.py --resume RUN --set train.epochs=N on a finished run trained every added epoch at
    learning rate 0 (PyTorch's chained PolynomialLR stays at its final 0) and left the weights as they were."""
    from conftest import run_cli

    run = Path(shutil.copytree(smoke_run, tmp_path / smoke_run.name))  # configs/smoke.yaml: 2 epochs
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    extended = run_cli("train.py", "--resume", str(run), "--set", "train.epochs=4")
    assert extended.returncode == 0, extended.stderr[-800:]
    rows = [line.split(",") for line in (run / "log.csv").read_text(encoding="utf-8").splitlines()]
    lr = {int(row[0]): float(row[rows[0].index("lr")]) for row in rows[1:]}
    lr0 = load_config(REPO / "configs" / "smoke.yaml").train.lr
    assert lr[3] == pytest.approx(lr0 * (1 - 2 / 4) ** 0.9, rel=1e-5)  # the decay planned for 4 epochs (log: 6 digits)
    assert lr[4] == pytest.approx(lr0 * (1 - 3 / 4) ** 0.9, rel=1e-5)
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_a_budgeted_run_without_validation_keeps_its_final_weights_as_best(tiny_dataset, tmp_path, monkeypatch):
    """Before (08dfd2b): the epoch count frozen in the checkpoint's config (1) was taken as the last epoch, so
    best.pt was written there and kept after the budget clock had raised the run to 2 epochs."""
    from pipeline.train import loop
    from pipeline.train.run import run_training

    class RaisedToTwo(loop.BudgetClock):  # the budget clock's refit after a fast first epoch
        def refit(self, cfg, run_dir, state, epoch, total, *args) -> int:
            return 2

    monkeypatch.setattr(loop, "BudgetClock", RaisedToTwo)
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={tiny_dataset}", f"output_dir={tmp_path}",
                                                         "data.val_fraction=0", "train.epochs=1", "train.budget=1h"])
    run = run_training(cfg)
    best, last = (torch.load(run / "checkpoints" / f"{n}.pt", weights_only=True) for n in ("best", "last"))
    assert (best["epoch"], last["epoch"]) == (2, 2)
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


@pytest.mark.slow
def test_a_resumed_budgeted_run_counts_the_time_its_earlier_sessions_took(tiny_dataset, tmp_path, caplog):
    """Before (c06c7e1): ``--resume`` made no budget clock, so a run that had used its hour trained on to
    its planned epochs; the checkpoint did not say how long the run had taken."""
    from pipeline.train.run import run_training

    overrides = [f"data.root={tiny_dataset}", f"output_dir={tmp_path}", "data.val_fraction=0", "train.epochs=1"]
    run = run_training(load_config(REPO / "configs" / "smoke.yaml", overrides))  # every run keeps its time
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert 0 < state["seconds"] < 600
    state["seconds"] = 3600.0  # the first session used the whole hour
    torch.save(state, last)
    with caplog.at_level("INFO", logger="pipeline.train.budget_clock"):
        run_training(load_config(run / "config.yaml", ["train.epochs=8", "train.budget=1h"]), resume_dir=run)
    assert "budget 1h: 4 epochs instead of 8" in caplog.text  # after this session's third epoch: stop there
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 4 and state["seconds"] > 3600
