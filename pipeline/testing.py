"""Testing a trained run: predict every case on its own grid, evaluate, report.

For each case: deterministic transforms -> ``predict_volume`` -> argmax ->
``Invertd`` back to the file's voxel grid (with ``data.spacing``: the probabilities,
then argmax) -> ``predictions/<case>.nii.gz`` in the input's geometry,
``slices/<case>.png``, and metric rows when a label exists.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, KeepLargestConnectedComponent
from tqdm import tqdm

from .checkpoint import load_checkpoint
from .config import Config, config_from_dict, config_to_dict, load_config, merge_overrides
from .datasets import Case, load_dataset
from .distributed import Dist, barrier, on_main, shard
from .errors import UserError
from .evaluation import evaluate_case
from .inference import predict_volume
from .io import ALL_SUFFIXES, case_id, load_image, natural_key, save_nifti, spacing_from_affine, write_label_like
from .report import read_case_rows, write_case_rows, write_reports
from .runtime import resolve_precision, select_device
from .training import model_from_config
from .transforms import IMAGE, build_transforms
from .visualisation import slice_figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    model: torch.nn.Module
    cfg: Config
    labels: dict[int, str]


def load_trained(run_dir: Path, checkpoint: str = "best", info: Dist = Dist()) -> TrainedModel:
    """The network of a run from ``best``, ``last`` or a checkpoint path, ready for inference."""
    path = run_dir / "checkpoints" / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"], f"{path} (config)")
    labels = {int(k): v for k, v in state["labels"].items()}
    model = model_from_config(cfg, int(state["in_channels"]), max(labels) + 1)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UserError(f"{path}: weights do not fit model {cfg.model.name} {cfg.model.channels} "
                        f"({str(err).splitlines()[0]})") from None
    device = info.device() if info.enabled else select_device()
    return TrainedModel(model.to(device).eval(), cfg, labels)


def resolve_run(run: str | Path) -> Path:
    run_dir = Path(run)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: run folder not found; train first (python train.py) or pass --run RUN_DIR")
    run_dir = run_dir.resolve()
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml)")
    return run_dir


def cases_from_images(images: Path, labels: Path | None) -> list[Case]:
    """Image files of a folder, each paired with the same-named file in ``labels`` when given."""
    if not images.is_dir():
        raise UserError(f"{images}: image folder not found")
    def files(folder: Path) -> list[Path]:
        return sorted((p for p in folder.iterdir() if p.name.lower().endswith(ALL_SUFFIXES)), key=natural_key)
    label_files = {}
    if labels is not None:
        if not labels.is_dir():
            raise UserError(f"{labels}: label folder not found")
        label_files = {case_id(p): p for p in files(labels)}
    cases = [Case(case_id(p), p, label_files.get(case_id(p))) for p in files(images)]
    if not cases:
        raise UserError(f"{images}: no image files ({', '.join(ALL_SUFFIXES)})")
    if labels is not None:
        missing = [c.image.name for c in cases if c.label is None]
        if missing:
            raise UserError(f"{labels}: no label for {', '.join(missing[:5])}; labels must share the image's file name")
    return cases


def run_cases(run_dir: Path, cfg: Config, data: str | None, images: str | None, labels: str | None) -> list[Case]:
    """The cases to test: the run's test split by default, or a dataset root laid out like the
    training data (read with the run's data options), or an image folder."""
    if images is not None:
        return cases_from_images(Path(images), Path(labels) if labels else None)
    if data is not None:
        dataset = load_dataset(data, cfg.data)
        return list(dataset.training + dataset.test)
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    dataset = load_dataset(split["root"], cfg.data)
    return [dataset.case(i) for i in split["test"]]


def new_output_dir(run_dir: Path, out: str | None, resume: bool = False) -> Path:
    """``--out`` (must be new or empty) or the first free ``RUN/test``, ``RUN/test-2``, ...

    With ``resume``: the existing ``--out`` (default ``RUN/test``) of a run that was stopped.
    """
    if resume:
        path = Path(out) if out is not None else run_dir / "test"
        if not path.is_dir():
            raise UserError(f"{path}: nothing to resume (no such folder); drop --resume")
        return path
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{path}: output folder exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    for n in range(1, 1000):
        path = run_dir / ("test" if n == 1 else f"test-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{run_dir}: too many test folders; pass --out")


def predict_case(
    trained: TrainedModel, image_path: Path, amp_dtype: torch.dtype | None, probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Label map (x, y, z) of one image on the source's own grid, the source's affine, and
    (with ``probabilities``) the softmax probabilities (K, x, y, z) on that grid.

    ``infer.tta`` averages flipped passes; ``infer.largest_component`` keeps the largest
    connected component (26-connected) of each foreground class of the label map. With
    ``data.spacing`` the network ran on a resampled grid: its probabilities are resampled
    (linearly) to the source grid and the label map is their argmax there, as nnU-Net
    does, rather than a nearest-neighbour copy of a label map from the other grid.
    """
    cfg = trained.cfg
    pre = build_transforms(cfg, train=False, keys=(IMAGE,))
    try:
        data = pre({IMAGE: str(image_path)})
    except Exception as err:  # MONAI wraps reader errors in RuntimeError with the transform chain
        raise UserError(f"{image_path}: cannot load ({str(err).splitlines()[-1][:200]})") from None
    device = next(trained.model.parameters()).device
    logits = predict_volume(trained.model, data[IMAGE].as_tensor()[None].to(device), cfg.train.patch_size,
                            cfg.infer, amp_dtype)
    n_classes, resampled = logits.shape[1], cfg.data.spacing is not None
    affine = np.asarray(data[IMAGE].meta["original_affine"], dtype=np.float64)
    if resampled:
        softmax = torch.softmax(logits, dim=1)[0].cpu()  # (K, H, W, D)
        del logits
        label, prob = _argmax_on_source_grid(softmax, data, pre, probabilities)
    else:
        keys, nearest = ["pred"], [True]
        data["pred"] = _like(logits.argmax(dim=1).to(torch.uint8).cpu(), data[IMAGE])  # (1, H, W, D)
        if probabilities:
            data["prob"] = _like(torch.softmax(logits, dim=1)[0].cpu(), data[IMAGE])  # (K, H, W, D)
            keys, nearest = keys + ["prob"], nearest + [False]
        del logits
        inverted = Invertd(keys, transform=pre, orig_keys=IMAGE, nearest_interp=nearest)(data)
        label = inverted["pred"].as_tensor().round().to(torch.uint8)
        prob = inverted["prob"].as_tensor().float() if probabilities else None
    if cfg.infer.largest_component:
        foreground = list(range(1, n_classes))
        label = KeepLargestConnectedComponent(applied_labels=foreground, independent=True)(label)
    return np.asarray(label[0]), affine, np.asarray(prob, dtype=np.float32) if prob is not None else None


def _argmax_on_source_grid(
    probs: torch.Tensor, data: dict, pre: Compose, keep: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label map (1, x, y, z) on the source grid: the argmax of the probabilities ``probs``
    (K, H, W, D, network grid) resampled there linearly one class at a time, so memory holds
    two source-grid volumes rather than K; with ``keep`` also the (K, x, y, z) probabilities."""
    best, label, kept = None, None, []
    for k in range(probs.shape[0]):
        item = {**data, "prob": _like(probs[k : k + 1], data[IMAGE])}
        inverted = Invertd("prob", transform=pre, orig_keys=IMAGE, nearest_interp=False)(item)
        channel = inverted["prob"].as_tensor().float()  # (1, x, y, z)
        if best is None:
            best, label = channel.clone(), torch.zeros(channel.shape, dtype=torch.uint8)
        else:
            label[channel > best] = k
            torch.maximum(best, channel, out=best)
        if keep:
            kept.append(channel)
    return label, torch.cat(kept) if keep else None


def _like(values: torch.Tensor, image: MetaTensor) -> MetaTensor:
    """``values`` with the image's metadata and transform history, so ``Invertd`` can undo them."""
    return MetaTensor(values, meta=image.meta, applied_operations=image.applied_operations)


def _test_case(trained: TrainedModel, case: Case, out_dir: Path, amp_dtype, window) -> list[dict]:
    """Prediction, slice image and metric rows (none without a label) of one case."""
    cfg = trained.cfg
    read = {"spacing": cfg.data.default_spacing}
    want_prob = cfg.infer.probabilities or (cfg.infer.auc and case.label is not None)
    pred, affine, prob = predict_case(trained, case.image, amp_dtype, probabilities=want_prob)
    mask = load_image(case.mask, label=True, **read)[0] > 0 if case.mask is not None else None
    if mask is not None:  # field of view (retina): nothing is predicted outside it
        pred[~mask] = 0
        if prob is not None:
            prob[:, ~mask] = 0.0
            prob[0][~mask] = 1.0
    write_label_like(pred, case.image, out_dir / "predictions" / f"{case.id}.nii.gz", affine=affine)
    if cfg.infer.probabilities:
        (out_dir / "probabilities").mkdir(exist_ok=True)
        save_nifti(np.moveaxis(prob[1:], 0, -1), affine, out_dir / "probabilities" / f"{case.id}.nii.gz")
    image, _ = load_image(case.image, h5_key=cfg.data.h5_image_key, channel=cfg.data.channel, **read)
    spacing = spacing_from_affine(affine)
    ref, rows = None, []
    if case.label is not None:
        ref, _ = load_image(case.label, h5_key=cfg.data.h5_label_key, label=True, **read)
        rows = evaluate_case(case.id, pred, ref.astype(np.int64), trained.labels, spacing, mask,
                             prob=prob if cfg.infer.auc else None)
    slice_figure(image, ref, pred, spacing, out_dir / "slices" / f"{case.id}.png", affine=affine,
                 title=case.id, window=window)
    return rows


def run_test(
    run: str | Path,
    checkpoint: str = "best",
    data: str | None = None,
    images: str | None = None,
    labels: str | None = None,
    out: str | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    info: Dist = Dist(),
) -> tuple[Path, dict | None]:
    """Predict, draw and evaluate; returns the output folder and the summary (None without labels,
    and on ranks other than 0 under torchrun, where each rank tests its share of the cases).

    ``overrides`` (``infer.overlap=0.5`` ...) change inference settings of the run's config.
    """
    run_dir = resolve_run(run)
    load_config(run_dir / "config.yaml")  # fail early on a damaged run folder
    trained = load_trained(run_dir, checkpoint, info)
    bad = [o for o in overrides if not o.strip().startswith("infer.")]
    if bad:
        raise UserError(f"--set {bad[0]!r}: test.py changes only infer.* keys; the rest belongs to the trained run")
    if overrides:
        cfg = config_from_dict(merge_overrides(config_to_dict(trained.cfg), overrides), "--set")
        trained = TrainedModel(trained.model, cfg, trained.labels)
    cfg = trained.cfg
    cases = run_cases(run_dir, cfg, data, images, labels)
    out_dir = on_main(lambda: new_output_dir(run_dir, out, resume), info)
    (out_dir / "predictions").mkdir(exist_ok=True)
    (out_dir / "slices").mkdir(exist_ok=True)
    done = read_case_rows(out_dir) if resume else {}
    if done:
        log.info("resuming %s: %d of %d cases already done", out_dir, len(done), len(cases))
    amp_dtype = resolve_precision(cfg.infer.precision, next(trained.model.parameters()).device)
    window = cfg.data.intensity_range if cfg.data.modality == "CT" else None
    with tqdm(shard(cases, info), desc="test", unit="case", disable=not info.is_main) as bar:
        for case in bar:  # the bar is closed (newline) on errors too
            if case.id not in done:
                done[case.id] = _test_case(trained, case, out_dir, amp_dtype, window)
                write_case_rows(out_dir, case.id, done[case.id])
    barrier(info)
    if not info.is_main:
        return out_dir, None
    done = read_case_rows(out_dir)  # every rank's cases
    rows = [row for case in cases for row in done[case.id]]
    slices = {case.id: f"slices/{case.id}.png" for case in cases}
    if not rows:
        log.info("no labels: wrote predictions and slices only")
        return out_dir, None
    summary = write_reports(rows, out_dir, slices, title=f"Test of {run_dir.name}")
    return out_dir, summary
