"""Every fold of a k-fold cross-validation in one run folder, sharing one budget (``data.folds`` > 1 with
``data.fold`` unset), as nnU-Net trains its five folds:

    <output_dir>/<name>-<timestamp>/
        config.yaml  plan.yaml  split.json  folds.json
        fold_0/ ... fold_<K-1>/     each a run folder of its own (test.py --run works on one fold)
        folds.csv                   validation Dice per fold and their mean, written as each fold ends
        postprocessing.json         flips and post-processing decided on the pooled out-of-fold predictions

Folds train one after the other; ``train.py --resume PARENT`` skips finished folds and resumes the
interrupted one. ``test.py --run PARENT`` averages the folds' probabilities (``Predictor.from_folds``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from ..checkpoint import load_checkpoint, weights_digest
from ..config import Config, load_config, save_config
from ..config_rules import budget_seconds
from ..data.check import checked_dataset
from ..data.cases import Dataset
from ..data.splits import every_fold, split_cases
from ..distributed import Dist, on_main
from ..predict.folds import FOLDS_FILE
from ..predict.postprocess import DECISION_FILE
from ..predict.predictor import Predictor
from .budget_clock import recorded_seconds
from .postprocessing import choose_and_write, decided_with, validation_maps
from .run import checked_buildable, new_run_dir, run_training
from .signals import TrainingInterrupted

log = logging.getLogger(__name__)

__all__ = ["TrainingInterrupted", "decide_on_folds", "fold_config", "fold_share", "train_folds", "train_run",
           "unspent", "write_summary"]

SUMMARY_FILE = "folds.csv"


def train_run(cfg: Config, resume_dir: str | Path | None = None, info: Dist = Dist(), plan: str | None = None,
              started: float | None = None) -> Path:
    """What ``train.py`` runs: every fold (``data.folds`` > 1, ``data.fold`` unset) or one run; its folder."""
    if every_fold(cfg.data):
        return train_folds(cfg, resume_dir, info, plan, started)
    return run_training(cfg, resume_dir, info, plan, started)


def fold_config(cfg: Config, k: int, seconds: float | None) -> Config:
    """Fold ``k`` of ``cfg``: its validation cases, and ``seconds`` of budget (None: no budget)."""
    budget = None if seconds is None else f"{max(seconds, 1.0):.0f}s"
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=k),
                               train=dataclasses.replace(cfg.train, budget=budget))


def fold_share(total_s: float | None, used_s: float, folds_left: int, held_s: float = 0.0) -> float | None:
    """A new fold's seconds: what the budget has left, shared by the folds still to train (the first fold
    does not pay alone for the start-up, the plan and the data check before it). ``held_s``: what the
    finished folds kept back for a post-processing decision they leave to the pooled one, which needs it."""
    return None if total_s is None else (total_s - used_s - held_s) / folds_left


def unspent(fold: Path) -> float:
    """Seconds a finished fold left of its budget (0 without one): its clock kept them for the decision on its
    validation cases, which ``decide_on_folds`` makes for all folds after the last."""
    budget = load_config(fold / "config.yaml").train.budget
    return 0.0 if budget is None else max(budget_seconds(budget) - recorded_seconds(fold), 0.0)


def train_folds(cfg: Config, parent: str | Path | None = None, info: Dist = Dist(), plan: str | None = None,
                started: float | None = None) -> Path:
    """Train (or, with ``parent``, resume) every fold; returns the parent folder. ``started``
    (``time.monotonic()`` when ``train.py`` began) starts the budget's clock; a resumed cross-validation
    counts what its folds had recorded before."""
    t0 = time.monotonic() if started is None else started
    if parent is None:  # the dataset is checked once, for the parent and every fold (rank 0's is used)
        parent, dataset = on_main(lambda: _new_parent(cfg, plan), info)
    else:
        parent, dataset = Path(parent), on_main(lambda: checked_dataset(cfg.data), info)
    names = json.loads((parent / FOLDS_FILE).read_text(encoding="utf-8"))["folds"]
    before = sum(recorded_seconds(parent / name) for name in names)  # earlier sessions' fold time
    total = budget_seconds(cfg.train.budget) if cfg.train.budget is not None else None
    for k, name in enumerate(names):
        folder = parent / name
        begun = (folder / "checkpoints" / "last.pt").is_file()  # finished, or resumable from its checkpoint
        if not begun and folder.exists() and info.is_main:  # killed before its first checkpoint: start it again
            log.info("%s: no checkpoint yet, starting the fold again", folder)
            shutil.rmtree(folder)
        now = time.monotonic()
        held = sum(unspent(parent / done) for done in names[:k]) if cfg.train.decide_postprocessing else 0.0
        share = fold_share(total, before + now - t0, len(names) - k, held)
        fold_cfg = load_config(folder / "config.yaml") if begun else fold_config(cfg, k, share)
        log.info("fold %d of %d: %s%s", k + 1, len(names), folder,
                 f" ({share:.0f} s of the budget)" if share is not None and not begun else "")
        run_training(fold_cfg, folder if begun else None, info, started=now, folder=None if begun else folder,
                     decide=False, dataset=dataset)
        if info.is_main:
            write_summary(parent, names)
    if cfg.train.decide_postprocessing and info.is_main:
        decide_on_folds(parent, [parent / n for n in names], dataset)
    return parent


def _new_parent(cfg: Config, plan: str | None) -> tuple[Path, Dataset]:
    """The parent folder with its configuration, plan, split (held-out cases) and list of folds; the checked
    dataset."""
    dataset = checked_buildable(cfg)  # before the folder: a dataset, model or split refused leaves nothing behind
    train, val, test = split_cases(list(dataset.training), dataclasses.replace(cfg.data, fold=0), cfg.train.seed)
    parent = new_run_dir(cfg)
    save_config(cfg, parent / "config.yaml")
    if plan is not None:
        (parent / "plan.yaml").write_text(plan, encoding="utf-8")
    pool = [c.id for c in train + val]  # every case validates one fold: each is out-of-fold once
    held_out = [c.id for c in test] or [c.id for c in dataset.test if c.label is not None] or pool
    split = {"root": str(dataset.root), "train": pool, "val": pool, "test": held_out}
    (parent / "split.json").write_text(json.dumps(split, indent=2), encoding="utf-8")
    folds = {"folds": [f"fold_{k}" for k in range(cfg.data.folds)], "budget": cfg.train.budget}
    (parent / FOLDS_FILE).write_text(json.dumps(folds, indent=2) + "\n", encoding="utf-8")
    log.info("cross-validation: %d folds in %s", cfg.data.folds, parent)
    return parent, dataset


def write_summary(parent: Path, names: list[str]) -> list[dict]:
    """``folds.csv``: per finished fold its cases, epochs, seconds, last and best validation Dice; then
    their mean. Returns the rows."""
    rows = []
    for name in names:
        log_csv = parent / name / "log.csv"
        if not log_csv.is_file():
            continue
        with open(log_csv, newline="", encoding="utf-8") as f:
            epochs = list(csv.DictReader(f))
        dice = [float(r["val_dice"]) for r in epochs if r["val_dice"]]
        split = json.loads((parent / name / "split.json").read_text(encoding="utf-8"))
        rows.append({"fold": name, "train_cases": len(split["train"]), "val_cases": len(split["val"]),
                     "epochs": len(epochs), "seconds": round(sum(float(r["seconds"]) for r in epochs), 1),
                     "last_val_dice": dice[-1] if dice else "", "best_val_dice": max(dice) if dice else ""})
    scored = [r for r in rows if r["best_val_dice"] != ""]
    mean = {"fold": "mean", **{k: "" for k in rows[0] if k != "fold"}} if rows else {}
    for key in ("last_val_dice", "best_val_dice"):
        if scored:
            mean[key] = round(sum(r[key] for r in scored) / len(scored), 6)
    with open(parent / SUMMARY_FILE, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["fold"])
        writer.writeheader()
        writer.writerows([*rows, mean] if rows else [])
    if scored:
        log.info("folds so far: mean validation Dice %.4f (last epoch), %.4f (best)", mean["last_val_dice"],
                 mean["best_val_dice"])
    return rows


def decide_on_folds(parent: Path, folds: list[Path], dataset: Dataset | None = None) -> dict:
    """Flips and post-processing for the ensemble, decided on the pooled out-of-fold predictions: each
    fold's ``best`` network predicts its own validation cases (of ``dataset``, when already checked).
    Written to ``parent/postprocessing.json`` with the digest of the folds' weights together; kept when it
    was made with these weights already."""
    digest = weights_digest(*(load_checkpoint(f / "checkpoints" / "best.pt")["model"] for f in folds))
    if decided_with(parent / DECISION_FILE) == digest:
        return json.loads((parent / DECISION_FILE).read_text(encoding="utf-8"))
    plain, flipped, refs, cases = [], [], [], []
    for fold in folds:
        predictor = Predictor.from_run(fold, "best", ["infer.backend=torch"])  # the network, as validation
        dataset = dataset or checked_dataset(predictor.cfg.data)
        val = [dataset.case(i) for i in json.loads((fold / "split.json").read_text(encoding="utf-8"))["val"]]
        maps = validation_maps(predictor.model, predictor.cfg, predictor.labels, val)
        for pooled, part in zip((plain, flipped, refs), maps):
            pooled += part
        cases += [c.id for c in val]
    (parent / DECISION_FILE).unlink(missing_ok=True)  # made for other weights: applies to none
    return choose_and_write(plain, flipped, refs, predictor.labels, cases, digest, parent)
