"""Typed configuration: frozen dataclasses loaded from YAML and ``--set`` overrides.

Keys are ``section.key`` (``data.root``, ``model.name``, ``train.epochs``, ...). YAML is read with a
safe loader that also rejects duplicate keys; an unknown or ill-typed key raises ``UserError``
naming it and listing the valid keys. The resolved configuration is saved in every run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import config_rules
from .config_rules import REPORT_METRICS
from .errors import UserError
from .yamlfile import UniqueKeySafeLoader, read_yaml


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/demo"
    layout: str = "auto"  # auto, msd, paired, h5, stack, list (see pipeline.datasets)
    list: str | None = None  # layout list: YAML or CSV of image,label[,mask] paths inside root
    images_dir: str | None = None  # layout paired: folder names (None: detect images/, labels/, mask/ ...)
    labels_dir: str | None = None
    fov_dir: str | None = None  # field-of-view masks: metrics are computed inside them
    pair_by: str = "auto"  # paired files: same name, leading number (DRIVE: 21_training <-> 21_manual1), or auto
    labels: tuple[str, ...] | None = None  # class names, background first (MSD: from dataset.json)
    h5_image_key: str = "image"
    h5_label_key: str = "label"
    channel: int | None = None  # pick one channel of colour images (1 = green)
    dicom_series: str | None = None  # a DICOM folder with several series: modality=CT, description=REGEX or uid=UID
    default_spacing: tuple[float, float, float] | None = None  # mm, for sources without one (HDF5, slices, 2D)
    modality: str = "CT"  # CT: clip to intensity_range (HU), map it onto intensity_target; MR / generic: z-score
    intensity_range: tuple[float, float] = (-200.0, 300.0)
    intensity_target: tuple[float, float] = (0.0, 1.0)  # the plan: the window's z-scores (nnU-Net's CT norm)
    channel_modality: tuple[str, ...] | None = None  # one modality per input channel ([CT, MR]), over `modality`
    contrast: str = "none"  # clahe: adaptive histogram equalisation per slice first (fundus photographs)
    crop_foreground: bool = True  # crop to the body (CT > -500 HU, others > 0) before sampling
    spacing: tuple[float, float, float] | None = None  # resample to this spacing (mm); None keeps the native grid
    val_fraction: float = 0.2  # of the training cases, held out for validation (seeded)
    folds: int = 0  # k-fold cross-validation when > 1: fold `fold` is the validation set
    fold: int | None = None  # unset with folds > 1: train.py trains every fold in one folder, sharing the budget
    val_cases: tuple[str, ...] | None = None  # explicit validation case ids (override the above)
    test_cases: tuple[str, ...] | None = None  # explicit test case ids taken out of the training cases
    cache_rate: float = 1.0  # fraction of preprocessed training volumes kept in memory
    cache_memory_gb: float = 8.0  # above this estimate the preprocessed volumes are cached on disk instead
    workers: int = 1  # loader threads (CPU) or processes (CUDA)
    lazy: str = "auto"  # train from chunked on-disk stores read by window: auto (above lazy_voxels), always, never
    lazy_voxels: int = 2**28  # auto: a stack / NIfTI / HDF5 case with more voxels makes every case of the run lazy
    store_dir: str | None = None  # where lazy stores live, reused across runs (None: <output_dir>/stores)
    tubular_classes: tuple[int, ...] = ()  # label ids of vessels, airways, neurites: reports add clDice for them


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resunet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    norm: str = "instance"
    dropout: float = 0.0
    # train every decoder level but the top and the lowest against the label too (nnU-Net); inference and
    # exported networks use the top head only
    deep_supervision: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    seed: int = 0
    patch_size: tuple[int, int, int] = (112, 112, 80)
    batch_size: int = 1  # volumes per step; each gives samples_per_volume crops
    samples_per_volume: int = 2
    # volumes drawn per epoch (distinct within an epoch when <= the training cases); unset: every
    # training case once. Fixes a run's cost, and so its wall time, whatever the number of cases.
    volumes_per_epoch: int | None = None
    pos_fraction: float = 0.5  # share of crops centred on foreground (RandCropByPosNegLabeld)
    flip_prob: float = 0.5  # per axis
    affine_prob: float = 0.0  # chance of a random rotation + scaling of a patch (RandAffined)
    rotate_degrees: float = 15.0  # up to this much in every plane the patch spans
    scale_range: float = 0.15  # scale factor in [1 - r, 1 + r] per axis
    intensity_prob: float = 0.0  # chance of an intensity scale (x[0.9, 1.1]) and, separately, a shift (+-0.1)
    gamma_prob: float = 0.0  # chance of a gamma in [0.7, 1.5] on the patch's intensity range
    noise_prob: float = 0.0  # chance of Gaussian noise, its std drawn from [0, 0.1] (z-scored units)
    blur_prob: float = 0.0  # chance of a Gaussian blur, sigma in [0.5, 1] voxels along each axis the patch spans
    contrast_prob: float = 0.0  # chance of a contrast factor in [0.75, 1.25] about the patch's mean, range kept
    low_res_prob: float = 0.0  # chance of a zoom out by [0.5, 1] (nearest) and back (linear): low resolution
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 3e-5
    lr_schedule: str = "poly"  # poly: lr * (1 - epoch / epochs) ** 0.9; step: lr * gamma every step_epochs
    lr_step_epochs: int = 10
    lr_gamma: float = 0.5
    dice_weight: float = 0.5
    ce_weight: float = 0.5
    class_weights: tuple[float, ...] | None = None  # cross-entropy weight per class, background first
    dice_background: bool = True  # the Dice term averages over every class; false: foreground classes only
    batch_dice: bool = False  # one Dice over all crops of a step, not the mean of per-crop Dice (an empty crop's
    #                           Dice is ~0 for any foreground it predicts)
    val_every: int = 1  # epochs between validations
    precision: str = "auto"  # fp32, bf16, fp16 or auto (bf16 where the hardware runs it natively)
    budget: float | str | None = None  # time for the run (30m, 1.5h, 90s; a number: minutes): a planned run fits it
    decide_postprocessing: bool = False  # after training: infer.tta, largest_component, fill_holes per class
    #                                      where they raise the validation Dice (the run's postprocessing.json)
    deterministic: bool = False  # same weights after kill + resume as uninterrupted (CPU; fp32 recommended)
    max_nonfinite_steps: int = 10  # consecutive NaN/Inf losses before training stops with an error
    sync_batchnorm: bool = False  # under torchrun with model.norm=batch: synchronise batch statistics


@dataclass(frozen=True)
class InferConfig:
    overlap: float = 0.25  # sliding-window overlap; 0.5 costs ~1.8x the windows on large volumes (see README)
    blend: str = "constant"  # or gaussian; constant matched gaussian on the demo test split (README)
    precision: str = "auto"
    # what runs the windows: auto (OpenVINO on a CPU where installed), torch, openvino, onnxruntime
    backend: str = "auto"
    sw_batch_size: int = 1
    # also write each prediction as nrrd-seg (3D Slicer) and/or dicom-seg (DICOM sources); NIfTI always
    output_format: str | tuple[str, ...] = "nifti"
    dicom_seg_type: str = "binary"  # or fractional: the foreground probabilities, 8 bits
    probabilities: bool = False  # also write probabilities/<case>.nii.gz (foreground classes, float32)
    tta: bool = False  # average the logits of every flip of the volume along the patch's axes (2D: 4, 3D: 8)
    largest_component: bool | tuple[int, ...] = False  # per class: keep its largest component (a list: those ids)
    fill_holes: bool | tuple[int, ...] = False  # per class: fill the background it encloses (a list: those ids)
    auc: bool = False  # ROC AUC per class from the probabilities (2D-sized problems: it sorts every voxel)
    stream_voxels: int = 2**28  # stacks, NIfTI, HDF5 with more voxels: predicted and scored slab by slab (0: always)


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...] = REPORT_METRICS  # which metrics reports compute (dice is always kept)
    nsd_tolerance_mm: float | tuple[float, ...] = 1.0  # NSD tolerance; a list: one per foreground class


@dataclass(frozen=True)
class Config:
    name: str = "demo"
    output_dir: str = "outputs"
    plan: bool = False  # a preset with plan: true lists only what differs from the plan; train.py plans the rest
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``hint`` and convert lists to tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    bad = UserError(f"{key}: expected {_describe(hint)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        *others, last = [a for a in args if a is not type(None)]
        for inner in others:  # e.g. float | tuple[float, ...]: the first that fits
            with contextlib.suppress(UserError):
                return _coerce(value, inner, key)
        return _coerce(value, last, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise UserError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _build(cls: type, values: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise UserError(f"{source}: unknown key {key!r}{hint}; valid keys: {', '.join(prefix + v for v in valid)}")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {key} must be a mapping of keys, got {value!r}")
            kwargs[name] = _build(hint, value, f"{key}.", source)
        else:
            kwargs[name] = _coerce(value, hint, f"{source}: {key}")
            problem = config_rules.problem(key, kwargs[name])
            if problem:
                raise UserError(f"{source}: {key} {problem}, got {value!r}")
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (['section', 'key'], value parsed as YAML)."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    try:
        value = yaml.load(text, Loader=UniqueKeySafeLoader) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip().split("."), value


def merge_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply ``--set section.key=value`` items to a raw config mapping (returns a new dict)."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        path, value = parse_override(item)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {part} is not a section")
        node[path[-1]] = value
    return merged


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Validate a raw mapping into a Config, raising UserError naming any bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    return _build(Config, raw, "", source)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML preset (defaults when None), apply ``--set`` overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections ({', '.join(SECTIONS)})")
    source = str(path) if path is not None else "config"
    if overrides:
        raw, source = merge_overrides(raw or {}, overrides), f"{source} + --set"
    return config_from_dict(raw, source)


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists) for YAML, JSON and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved configuration as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
