"""From a dataset root and a time budget to a configuration: fingerprint, choices, timed schedule.

Precedence: the plan fills every key it decides; a preset's keys and ``--set`` keys win over it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from ..config import Config, config_from_dict, load_config, merge_overrides, read_yaml
from ..data.check import checked_dataset
from ..data.splits import every_fold, split_cases
from ..errors import UserError
from ..predict.postprocess import DECIDED_KEYS
from ..predict.streamed import window_starts
from ..train.budget_clock import decision_passes
from .batch import plan_crops
from .budget import fit_schedule, parse_budget, time_steps
from .choices import Choice, plan_augmentation, plan_data, plan_network
from .fingerprint import Fingerprint, fingerprint

DEFAULT_BUDGET = "30m"

log = logging.getLogger(__name__)


def plan_dict(choices: Sequence[Choice]) -> dict:
    """The choices as a raw nested configuration mapping."""
    raw: dict = {}
    for choice in choices:
        *sections, key = choice.key.split(".")
        node = raw
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = choice.value
    return raw


def plan_yaml(choices: Sequence[Choice]) -> str:
    """The plan as a YAML preset, each key with its reason as a comment (``train.py --config`` reads it)."""
    lines = ["# planned by python -m pipeline.plan: each key with the reason it was chosen"]
    section = None
    for choice in sorted(choices, key=lambda c: (c.key.count("."), c.key.split(".")[0])):
        *parts, key = choice.key.split(".")
        if parts and parts[0] != section:
            section = parts[0]
            lines.append(f"{section}:")
        value = yaml.safe_dump(choice.value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{'  ' if parts else ''}{key}: {value}  # {choice.reason}")
    return "\n".join(lines) + "\n"


def plan(base: Config, overrides: Sequence[str] = (), timing: bool = True,
         clock: Callable[[], float] = time.perf_counter,
         preset: dict | None = None) -> tuple[Fingerprint, list[Choice]]:
    """Fingerprint of ``base.data.root`` and the plan for it; the schedule is timed unless ``timing`` is
    off or the user (or the raw ``preset``) fixed ``train.epochs``. ``overrides`` are the user's keys,
    ``preset`` a preset's: they win, and the timed steps use them."""
    dataset = checked_dataset(base.data)  # the plan reads only what the dataset check lets through
    found = fingerprint(dataset, base.data, base.train.seed)
    if not found.cases:
        raise UserError(f"{base.data.root}: no labelled training cases to plan from")
    choices = plan_data(found)
    spacing = next(c.value for c in choices if c.key == "data.spacing")
    choices += plan_network(found, spacing)
    preset = preset or {}
    fixed = {o.split("=", 1)[0].strip() for o in overrides} | _flat_keys(preset)
    if timing and "train.epochs" not in fixed:
        timed = _schedule(dataset, found, choices, base, overrides, clock, preset, fixed)
        choices = [c for c in choices if c.key not in {t.key for t in timed}] + timed
    return found, choices


def _schedule(dataset, found: Fingerprint, choices: list[Choice], base: Config, overrides: Sequence[str],
              clock: Callable[[], float], preset: dict, fixed: set[str]) -> list[Choice]:
    """The timed choices: crops per step (unless given), the epochs that fill the budget and the augmentation
    that that many steps support."""
    cfg = config_from_dict(merge_overrides(_deep_merge(plan_dict(choices), preset), overrides), "plan + --set")
    n_classes = max(dataset.labels) + 1
    folds = every_fold(cfg.data)  # each fold gets its share of the time
    data = dataclasses.replace(cfg.data, fold=0) if folds else cfg.data  # the folds' sizes differ by one case
    train, val, _ = split_cases(list(dataset.training), data, cfg.train.seed)
    budget = parse_budget(cfg.train.budget or DEFAULT_BUDGET) / (cfg.data.folds if folds else 1)

    def seconds_at(volumes: int, per_volume: int) -> float:
        crops = dataclasses.replace(cfg.train, batch_size=volumes, samples_per_volume=per_volume)
        return time_steps(dataclasses.replace(cfg, train=crops), found.cases[0].channels, n_classes, clock=clock)

    batch: list[Choice] = []
    if {"train.batch_size", "train.samples_per_volume"} & fixed:
        step_s = seconds_at(cfg.train.batch_size, cfg.train.samples_per_volume)
    else:
        batch, step_s = plan_crops(cfg.train.patch_size, found.is_2d, len(train), seconds_at)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(
            cfg.train, batch_size=batch[0].value, samples_per_volume=batch[1].value))
    per_epoch = math.ceil((cfg.train.volumes_per_epoch or len(train)) / cfg.train.batch_size)
    forward_s = step_s / (3 * cfg.train.batch_size * cfg.train.samples_per_volume)  # a forward is ~1/3 of a step
    shape = np.median(found.shapes, axis=0)
    windows = math.prod(len(window_starts(max(int(s), p), p, cfg.infer.overlap))  # padded up to the patch
                        for s, p in zip(shape, cfg.train.patch_size))
    validation_s = len(val) * windows * forward_s  # validation runs without flips
    decision_s = validation_s * decision_passes(cfg.train)
    schedule = fit_schedule(budget, step_s, per_epoch, validation_s, decision_s)
    augment = plan_augmentation(schedule.epochs * per_epoch, found.is_2d)
    return [*batch, *augment,
            Choice("train.budget", cfg.train.budget or DEFAULT_BUDGET, "the time this run may take"
                   + (f", shared by its {cfg.data.folds} folds (the epochs are one fold's)" if folds else "")),
            Choice("train.epochs", schedule.epochs, schedule.reason),
            Choice("train.val_every", schedule.val_every, "five validations over the run"),
            Choice("train.lr_schedule", "poly", "poly decay to 0 over the planned epochs")]


def planned_config(overrides: Sequence[str], preset: str | Path | None = None,
                   timing: bool = True) -> tuple[Config, str]:
    """The configuration ``train.py`` runs when it plans: plan, then the preset's keys, then ``--set``."""
    base = load_config(preset, overrides)
    preset_raw = (read_yaml(preset) or {}) if preset is not None else {}
    _, choices = plan(base, overrides, timing, preset=preset_raw)
    given = {o.split("=", 1)[0].strip() for o in overrides}
    fixed = given | _flat_keys(preset_raw)
    if "name" not in fixed:
        root = Path(base.data.root).resolve()
        generic = root.name.lower() in ("train", "training", "data", "dataset", "images")
        choices.append(Choice("name", f"{root.parent.name}-{root.name}" if generic else root.name,
                              "the dataset folder's name"))
    if fixed & set(DECIDED_KEYS):  # the user's own post-processing: nothing to decide
        choices = [c for c in choices if c.key != "train.decide_postprocessing"]
    raw = _deep_merge(plan_dict(choices), preset_raw)
    cfg = config_from_dict(merge_overrides(raw, overrides), "plan + preset + --set")
    for choice in choices:
        if choice.key in fixed:  # the value the run gets, beside the one the plan would have given
            owner = "yours" if choice.key in given else "the preset's"
            log.info("plan: %s = %s  (%s; the plan: %s)", choice.key, _value(cfg, choice.key), owner, choice.value)
        else:
            log.info("plan: %s = %s  (%s)", choice.key, choice.value, choice.reason)
    return cfg, plan_yaml(choices)


def _value(cfg: Config, key: str):
    """The value of dotted ``key`` in ``cfg``, lists for tuples as the plan writes them."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def run_config(config: str | Path, overrides: Sequence[str], resume: str | None, preset: str | None,
               plan_flag: bool) -> tuple[Config, str | None]:
    """``train.py``'s configuration and plan (YAML, or None): a resumed run's own; planned for own data
    (``data.root`` given without a preset), with ``--plan`` or a preset saying ``plan: true``; else the
    preset (``config``)."""
    cfg = load_config(config, overrides)
    own_data = not preset and any(o.strip().startswith("data.root=") for o in overrides)
    if not resume and (plan_flag or own_data or cfg.plan):
        return planned_config(overrides, preset)
    return cfg, None


def _flat_keys(raw: dict, prefix: str = "") -> set[str]:
    """The dotted keys of a nested configuration mapping."""
    keys = set()
    for key, value in raw.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = _deep_merge(merged.get(key, {}), value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged
