"""Decide test-time flips and post-processing on the validation cases at the end of training, as nnU-Net
decides its post-processing on cross-validation: each is switched on only where it raises the
validation Dice. The decision is kept in the run's ``postprocessing.json``; ``Predictor.from_run``
applies it under the user's ``--set`` keys.

Order (each step builds on the one before): flips (``infer.tta``, mean foreground Dice); then per
class, largest component (``infer.largest_component``); then per class, hole filling
(``infer.fill_holes``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load_checkpoint, weights_digest
from ..config import Config
from ..data.cases import Case
from ..data.io import load_image, reader_options
from ..evaluate.metrics import dice
from ..data.layouts import load_dataset
from ..predict.postprocess import DECISION_FILE, fill_holes, keep_largest
from ..predict.predictor import Predictor

log = logging.getLogger(__name__)


def _class_dice(maps: Sequence[np.ndarray], refs: Sequence[np.ndarray], c: int) -> float:
    """Mean over cases of the Dice of class ``c``."""
    return float(np.mean([dice(m == c, r == c) for m, r in zip(maps, refs)]))


def choose(plain: Sequence[np.ndarray], flipped: Sequence[np.ndarray], refs: Sequence[np.ndarray],
           foreground: Sequence[int]) -> dict:
    """The decision from the validation label maps (x, y, z) predicted without and with flips and their
    references: ``{"infer.tta": bool, "infer.largest_component": [ids], "infer.fill_holes": [ids],
    "dice": {step: mean foreground Dice after it}}``."""
    def mean(maps: Sequence[np.ndarray]) -> float:
        return float(np.mean([_class_dice(maps, refs, c) for c in foreground]))

    tta = mean(flipped) > mean(plain)
    maps = list(flipped if tta else plain)
    scores = {"plain": mean(plain), "tta": mean(flipped)}
    chosen: dict[str, list[int]] = {}
    for key, operation in (("infer.largest_component", keep_largest), ("infer.fill_holes", fill_holes)):
        chosen[key] = []
        for c in foreground:
            changed = [operation(m, [c]) for m in maps]
            if _class_dice(changed, refs, c) > _class_dice(maps, refs, c):
                chosen[key].append(int(c))
                maps = changed
        scores[key] = mean(maps)
    return {"infer.tta": tta, **chosen, "dice": scores}


def validation_maps(model: torch.nn.Module, cfg: Config, labels: dict[int, str],
                    cases: Sequence[Case]) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(plain, flipped, references): the label maps (x, y, z) of ``cases`` predicted by ``model`` without
    and with flips, post-processing off, and their reference labels."""
    plain_cfg = dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, tta=False, largest_component=False,
                                                                   fill_holes=False))
    flipped_cfg = dataclasses.replace(plain_cfg, infer=dataclasses.replace(plain_cfg.infer, tta=True))
    plain, flipped, refs = [], [], []
    model.eval()
    for case in cases:
        refs.append(load_image(case.label, **reader_options(cfg.data, label=True))[0])
        plain.append(Predictor(model, plain_cfg, labels).predict(case).label)
        flipped.append(Predictor(model, flipped_cfg, labels).predict(case).label)
    return plain, flipped, refs


def choose_and_write(plain: Sequence[np.ndarray], flipped: Sequence[np.ndarray], refs: Sequence[np.ndarray],
                     labels: dict[int, str], cases: Sequence[str], digest: str, run_dir: Path) -> dict:
    """``choose`` on the maps of ``cases``, written to ``run_dir/postprocessing.json`` with the ``digest`` of
    the weights that predicted them (it applies to those only)."""
    decision = choose(plain, flipped, refs, sorted(k for k in labels if k != 0))
    decision["cases"] = list(cases)
    decision["weights"] = digest
    (run_dir / DECISION_FILE).write_text(json.dumps(decision, indent=2) + "\n", encoding="utf-8")
    log.info("post-processing decided on %d validation case(s): tta %s, largest component %s, fill holes %s "
             "(Dice %s)", len(cases), decision["infer.tta"], decision["infer.largest_component"] or "none",
             decision["infer.fill_holes"] or "none",
             ", ".join(f"{k.removeprefix('infer.')} {v:.4f}" for k, v in decision["dice"].items()))
    return decision


def decide_postprocessing(model: torch.nn.Module, cfg: Config, labels: dict[int, str], cases: Sequence[Case],
                          run_dir: Path) -> dict:
    """Predict ``cases`` without and with flips, choose, and write ``run_dir/postprocessing.json`` with
    the digest of ``model``'s weights (it applies to those only)."""
    plain, flipped, refs = validation_maps(model, cfg, labels, cases)
    return choose_and_write(plain, flipped, refs, labels, [c.id for c in cases], weights_digest(model.state_dict()),
                            run_dir)


def decide_after_training(cfg: Config, run_dir: Path) -> None:
    """The decision for a finished run with ``train.decide_postprocessing``, with its ``best`` checkpoint
    (the one ``test.py`` uses by default); made again when ``best.pt`` has changed since (a resumed or
    extended run)."""
    val = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))["val"]
    if not val:
        log.info("no validation cases: test-time flips %s, largest component %s, fill holes %s, as configured",
                 cfg.infer.tta, cfg.infer.largest_component, cfg.infer.fill_holes)
        return
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    decided = decided_with(run_dir / DECISION_FILE)
    if decided == weights_digest(best["model"]):
        return
    if decided is not None:
        log.info("best.pt has changed since the post-processing was decided: deciding again")
    (run_dir / DECISION_FILE).unlink(missing_ok=True)  # made for other weights: applies to none
    dataset = load_dataset(cfg.data.root, cfg.data)
    predictor = Predictor.from_run(run_dir, "best", ["infer.backend=torch"])  # the network itself, as validation
    decide_postprocessing(predictor.model, predictor.cfg, predictor.labels, [dataset.case(i) for i in val], run_dir)


def decided_with(path: Path) -> str | None:
    """The weights digest a decision file names (None without a readable one: decide again)."""
    try:
        decision = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return decision.get("weights") if isinstance(decision, dict) else None
