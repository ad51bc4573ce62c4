"""A training run's folder: check the data, make (or reopen) ``<output_dir>/<name>-<timestamp>/``
with ``config.yaml`` and ``split.json``, then fit.

``<output_dir>/latest`` points at the newest run; ``--resume`` continues a run in its own folder.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from models3d import build_from_config

from ..config import Config, config_from_dict, save_config
from ..data.cases import Dataset
from ..data.check import checked_dataset
from ..data.splits import split_cases
from ..data.store import lazy_cases
from ..distributed import Dist, on_main
from ..errors import UserError
from ..checkpoint import load_resume_checkpoint
from .loop import Run, fit
from .postprocessing import decide_after_training
from .signals import TrainingInterrupted

log = logging.getLogger(__name__)

__all__ = ["Run", "TrainingInterrupted", "new_run_dir", "prepare_run", "run_training"]


def new_run_dir(cfg: Config) -> Path:
    """A fresh ``<output_dir>/<name>-<timestamp>`` folder (never an existing one), ``latest`` pointed at it."""
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"output_dir {out}: cannot create ({err.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"output_dir {out}: not writable; set output_dir to a folder you can write")
    if (out / "latest").exists() and not (out / "latest").is_symlink():
        raise UserError(f"{out / 'latest'}: a folder of that name is in the way of the link to the newest run; "
                        "rename it (nothing in it is touched)")
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


def run_training(cfg: Config, resume_dir: str | Path | None = None, info: Dist = Dist(),
                 plan: str | None = None, started: float | None = None, folder: Path | None = None,
                 decide: bool = True, dataset: Dataset | None = None) -> Path:
    """Check the data, make (or reopen) the run folder, and fit. Returns the run folder.

    Under torchrun rank 0 alone checks the data and writes the run folder; the
    other ranks receive the outcome (or stop quietly on its error, which rank 0 reports).
    ``plan`` (the planner's YAML, reasons as comments) is kept as ``plan.yaml`` in a new run folder.
    ``started`` (``time.monotonic()`` when ``train.py`` began) starts the budget's clock. ``folder``: the new
    run's folder (a fold's), instead of ``<output_dir>/<name>-<timestamp>``. ``decide``: off for a fold,
    whose post-processing is decided on all folds together (``folds.py``). ``dataset``: the checked dataset,
    when the caller has it (the folds: each would read every case again).
    """
    run, resume = on_main(lambda: prepare_run(cfg, resume_dir, plan, folder, dataset), info)
    if run is not None and (resume is None or not _finished(cfg, resume)):
        fit(cfg, run, resume, info, started)
    run_dir = Path(run.dir if run is not None else resume_dir)
    if cfg.train.decide_postprocessing and decide and info.is_main:
        decide_after_training(cfg, run_dir)
    return run_dir


def _finished(cfg: Config, resume: dict) -> bool:
    return int(resume["epoch"]) >= cfg.train.epochs and resume.get("partial") is None


def _reopen(cfg: Config, run_dir: Path) -> dict:
    """The checkpoint to resume ``run_dir`` from, after checking that ``cfg`` may continue it."""
    resume = load_resume_checkpoint(run_dir / "checkpoints" / "last.pt")
    saved = config_from_dict(resume["config"], f"{run_dir}/checkpoints/last.pt")
    if (saved.model, saved.train.patch_size, saved.data.root) != (cfg.model, cfg.train.patch_size, cfg.data.root):
        raise UserError(f"{run_dir}: checkpoint was made with model {saved.model}, patch "
                        f"{saved.train.patch_size} and data {saved.data.root}; a resumed run keeps those")
    return resume


def _new_run(cfg: Config, dataset: Dataset, plan: str | None = None, folder: Path | None = None) -> Run:
    """A new run folder with ``config.yaml``, ``split.json`` (train / val / test case ids) and the plan."""
    train, val, held_out = split_cases(list(dataset.training), cfg.data, cfg.train.seed)
    test = held_out or [c for c in dataset.test if c.label is not None] or val  # data.test_cases, when set, win
    if not test:
        log.warning("no held-out cases: test.py will evaluate the training cases; use --data for real test data")
        test = train
    lazy_cases(cfg, train + val)  # settings that lazy stores would not apply are refused before the folder exists
    if folder is not None:
        folder.mkdir()
    run_dir = folder or new_run_dir(cfg)
    save_config(cfg, run_dir / "config.yaml")
    if plan is not None:
        (run_dir / "plan.yaml").write_text(plan, encoding="utf-8")
    split = {"root": str(dataset.root), "train": [c.id for c in train], "val": [c.id for c in val],
             "test": [c.id for c in test]}
    (run_dir / "split.json").write_text(json.dumps(split, indent=2), encoding="utf-8")
    log.info("run folder %s", run_dir)
    return Run(run_dir, dataset, train, val)


def checked_buildable(cfg: Config) -> Dataset:
    """The checked dataset, once the model is known to build for it: called before a run folder exists, so
    that a refused dataset or model leaves nothing behind."""
    dataset = checked_dataset(cfg.data)
    try:
        build_from_config(cfg.model, len(dataset.modalities), max(dataset.labels) + 1, cfg.train.patch_size)
    except ValueError as err:
        raise UserError(str(err)) from None
    return dataset


def prepare_run(cfg: Config, resume_dir: str | Path | None, plan: str | None = None,
                folder: Path | None = None, dataset: Dataset | None = None) -> tuple[Run | None, dict | None]:
    """Checked data (``dataset``, when already checked) and a new (or reopened) run folder; (None, checkpoint)
    when the resumed run is done."""
    if resume_dir is None:
        return _new_run(cfg, dataset or checked_buildable(cfg), plan, folder), None
    run_dir = Path(resume_dir)
    resume = _reopen(cfg, run_dir)
    if _finished(cfg, resume):
        log.info("%s already finished %d epochs; raise train.epochs to train longer", run_dir, cfg.train.epochs)
        return None, resume
    save_config(cfg, run_dir / "config.yaml")
    dataset = dataset or checked_dataset(cfg.data)
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    train, val = ([dataset.case(i) for i in split[part]] for part in ("train", "val"))
    return Run(run_dir, dataset, train, val), resume
