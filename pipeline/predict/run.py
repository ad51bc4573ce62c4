"""Testing a trained run (``test.py``): predict every case on its own grid, evaluate, report.

For each case, read once through the ``Predictor``: ``predictions/<case>.nii.gz``
in the input's geometry (and ``probabilities/`` on request), ``slices/<case>.png``,
and metric rows when a label exists; ``cases/<case>.json`` marks the case done,
so ``--resume`` and torchrun ranks work case by case.
"""

from __future__ import annotations

import json
import shutil
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import Config, load_config
from ..data.cases import Case
from ..data.grids import check_same_grid, grid_difference
from ..data.io import ALL_SUFFIXES, case_id, kind_of, list_images, load_image, reader_options, spacing_or_default
from ..data.label_maps import class_ids, is_binary_mask
from ..data.layouts import load_dataset
from ..data.stack import SliceStack
from ..data.volume_slabs import SlabSource, VolumeSlabs, slab_source
from ..data.writers import save_nifti, write_label_like
from ..distributed import Dist, barrier, on_every_rank, on_main, shard, slice_share
from ..errors import UserError
from ..evaluate.figures import slice_figure
from ..evaluate.report import read_case_rows, write_case_rows, write_reports
from ..evaluate.rows import MetricOptions, evaluate_case, summarize
from ..evaluate.slabs import score_stack
from .clinical_outputs import check_sources, needs_probabilities, warn_if_streamed, write_clinical_outputs
from .folds import fold_dirs
from .outputs import discard_unfinished, new_output_dir
from .predictor import Predictor
from .stack_job import predict_slabs, stack_thumbnail, streamed_stack, write_volume_prediction

log = logging.getLogger(__name__)


def resolve_run(run: str | Path) -> Path:
    run_dir = Path(run)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: run folder not found; train first (python train.py) or pass --run RUN_DIR")
    run_dir = run_dir.resolve()
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml)")
    return run_dir


def cases_from_images(images: Path, labels: Path | None) -> list[Case]:
    """Image files and DICOM series folders of a folder, each paired with the same-named file in ``labels``
    when given."""
    if not images.is_dir():
        raise UserError(f"{images}: image folder not found")
    label_files = {}
    if labels is not None:
        if not labels.is_dir():
            raise UserError(f"{labels}: label folder not found")
        label_files = {case_id(p): p for p in list_images(labels)}
    series = [p for p in sorted(images.iterdir()) if p.is_dir() and _is_dicom_folder(p)]
    cases = [Case(case_id(p), p, label_files.get(case_id(p))) for p in list_images(images) + series]
    if not cases:
        raise UserError(f"{images}: no image files ({', '.join(ALL_SUFFIXES)}) and no DICOM series folders")
    if labels is not None:
        missing = [c.image.name for c in cases if c.label is None]
        if missing:
            raise UserError(f"{labels}: no label for {', '.join(missing[:5])}; labels must share the image's file name")
    return cases


def _is_dicom_folder(path: Path) -> bool:
    try:
        return kind_of(path) == "dicom"
    except UserError:  # an empty or foreign folder beside the images
        return False


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


SCORED = {
    "held-out": "held-out test cases, used neither for training nor for choosing the checkpoint",
    "selection": "the validation cases that chose best.pt: a selection set, optimistic, not a test",
    "training": "training cases: not a test",
    "given": "the cases given with --data / --images",
}


def scored_kind(run_dir: Path, data: str | None, images: str | None, checkpoint: str = "best") -> str:
    """What ``test.py`` scores (a key of ``SCORED``): the run's test split compared with its training
    cases, and with its validation cases when those chose the checkpoint (``best``); ``given`` for
    cases named on the command line."""
    if data is not None or images is not None:
        return "given"
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    test, chosen_on = set(split["test"]), set(split["val"]) if checkpoint == "best" else set()
    return "training" if test & set(split["train"]) else "selection" if test & chosen_on else "held-out"


def check_streamed(cfg: Config, case: Case, stack: SlabSource) -> None:
    """Refuse options the slab-by-slab path cannot honour, naming them and the way out."""
    unsupported = [k for k, on in (("infer.auc", cfg.infer.auc),
                                   ("infer.largest_component", cfg.infer.largest_component),
                                   ("infer.fill_holes", cfg.infer.fill_holes),
                                   ("data.spacing", cfg.data.spacing is not None),
                                   ("infer.probabilities", cfg.infer.probabilities and isinstance(stack, VolumeSlabs)))
                  if on]
    if unsupported:
        raise UserError(f"{case.image}: {', '.join(unsupported)} not available for volumes predicted slab by slab; "
                        f"turn it off or raise infer.stream_voxels above {int(np.prod(stack.shape))}")


def _test_streamed_case(predictor: Predictor, case: Case, stack: SlabSource, out_dir: Path,
                        info: Dist) -> list[dict]:
    """A slice stack or volume above ``infer.stream_voxels``, in bounded memory, its slices shared by the
    ranks: label slices in ``predictions/<case>/`` (a volume: slices in ``partial/<case>/``, then
    ``predictions/<case>.nii.gz`` in its own geometry); on rank 0 metrics counted slab by slab and
    slices of a subsampled copy (other ranks return no rows)."""
    cfg = predictor.cfg
    check_streamed(cfg, case, stack)
    volume = isinstance(stack, VolumeSlabs)
    ref = slab_source(case.label, cfg.data, label=True) if case.label is not None else None
    if ref is not None:
        check_same_grid(stack, ref)
    if info.is_main:
        log.info("%s: %s voxels, predicted slab by slab", case.id, "x".join(map(str, stack.shape)))
    folder = out_dir / ("partial" if volume else "predictions") / case.id
    probabilities = out_dir / "probabilities" / case.id if cfg.infer.probabilities else None
    share = slice_share(stack.shape[2], info)
    on_every_rank(lambda: predict_slabs(predictor, stack, folder, share, probabilities), info)
    if not info.is_main:
        return []
    pred = SliceStack(folder, label=True)
    if volume:
        write_volume_prediction(folder, stack, out_dir / "predictions" / f"{case.id}.nii.gz")
    options = MetricOptions.from_config(cfg)
    if options.tubular and options.wants("cldice"):
        log.warning("%s: clDice is not computed for stacks predicted slab by slab (a skeleton needs the whole "
                    "volume); NSD and the other metrics are", case.id)
    spacing = stack.spacing if volume else _spacing(cfg)
    rows = score_stack(pred, ref, case.id, predictor.labels, spacing, options) if ref is not None else []
    (image, factor), pred_thumb = stack_thumbnail(stack), stack_thumbnail(pred)[0]
    ref_thumb = stack_thumbnail(ref)[0] if ref is not None else None
    if ref_thumb is not None and is_binary_mask(np.unique(ref_thumb).tolist(), ref_thumb.dtype):
        ref_thumb = (ref_thumb > 0).astype(np.uint8)
    spacing = tuple(factor * s for s in spacing)
    slice_figure(image, ref_thumb, pred_thumb, spacing, out_dir / "slices" / f"{case.id}.png",
                 title=f"{case.id} (every {factor}. voxel)" if factor > 1 else case.id)
    if volume:  # the NIfTI is written and scored: its slices are no longer needed for a resume
        shutil.rmtree(folder)
    return rows


def _spacing(cfg: Config) -> tuple[float, float, float]:
    """Voxel size (mm) of slice stacks, which carry none: ``data.default_spacing``, else 1 mm."""
    return spacing_or_default(cfg.data.default_spacing)


def _test_case(predictor: Predictor, case: Case, out_dir: Path, source: str) -> list[dict]:
    """Prediction (and its clinical formats; ``source``: the run or package), slice image and metric rows
    (none without a label) of one case."""
    cfg = predictor.cfg
    want_prob = cfg.infer.probabilities or (cfg.infer.auc and case.label is not None) or needs_probabilities(cfg)
    result = predictor.predict(case, probabilities=want_prob)
    write_label_like(result.label, case.image, out_dir / "predictions" / f"{case.id}.nii.gz", affine=result.affine)
    write_clinical_outputs(result, case, cfg, predictor.labels, out_dir / "predictions", source)
    if cfg.infer.probabilities:
        (out_dir / "probabilities").mkdir(exist_ok=True)
        save_nifti(np.moveaxis(result.probabilities[1:], 0, -1), result.affine,
                   out_dir / "probabilities" / f"{case.id}.nii.gz")
    ref, rows = None, []
    if case.label is not None:
        ref, ref_affine = load_image(case.label, **reader_options(cfg.data, label=True))
        difference = grid_difference(ref.shape, ref_affine, result.label.shape, result.affine)
        if difference is not None:
            raise UserError(f"{case.label}: not on the grid of {case.image.name} ({difference}); "
                            "resample the label onto the image's grid (nearest neighbour) first")
        ref = class_ids(ref, case.label)  # integer labels as they are (no 8-byte copy); NaN, fractions refused
        rows = evaluate_case(case.id, result.label, ref, predictor.labels, result.spacing,
                             result.mask, prob=result.probabilities if cfg.infer.auc else None,
                             options=MetricOptions.from_config(cfg))
    window = cfg.data.intensity_range if cfg.data.modality == "CT" else None
    slice_figure(result.image, ref, result.label, result.spacing, out_dir / "slices" / f"{case.id}.png",
                 affine=result.affine, title=case.id, window=window)
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
    model: str | None = None,
) -> tuple[Path, dict | None]:
    """Predict, draw and evaluate; returns the output folder and the summary (None without labels,
    and on ranks other than 0 under torchrun, where each rank tests its share of the cases).

    ``model``: a model package (``python -m pipeline.export``) instead of the run, for ``data`` or
    ``images``; its results go to ``--out`` or ``outputs/<package name>/test``.
    ``overrides`` (``infer.overlap=0.5`` ...) change inference settings of the run's config.
    """
    device = info.device() if info.enabled else None
    title = None
    if model is not None:
        if data is None and images is None:
            raise UserError(f"{model}: a model package has no test split; give --data ROOT or --images DIR")
        predictor = Predictor.from_package(model, overrides, device)
        base, name, kind = Path(predictor.cfg.output_dir) / Path(model).stem, Path(model).name, "given"
        on_main(lambda: base.mkdir(parents=True, exist_ok=True), info)
    else:
        base = resolve_run(run)
        load_config(base / "config.yaml")  # fail early on a damaged run folder
        folds = fold_dirs(base)
        predictor = Predictor.from_folds(base, folds or [base], checkpoint, overrides, device)
        name, kind = base.name, scored_kind(base, data, images, checkpoint)
        if folds:  # the report says which networks were averaged
            title = f"{name}, ensemble: the mean probabilities of {', '.join(f.name for f in folds)} ({checkpoint})"
    cases = run_cases(base, predictor.cfg, data, images, labels)
    check_sources(predictor.cfg, cases)  # before the output folder: nothing half-written
    existed = out is not None and Path(out).exists()
    out_dir = on_main(lambda: new_output_dir(base, out, resume), info)
    try:
        _test_cases(predictor, cases, out_dir, resume, info, name)
    except UserError:
        if info.is_main and not resume:
            discard_unfinished(out_dir, created=not existed)
        raise
    barrier(info)
    if not info.is_main:
        return out_dir, None
    curve = base / "loss.png" if model is None and (base / "loss.png").is_file() else None
    return out_dir, _report(title or name, out_dir, cases, kind, curve)


def _test_cases(predictor: Predictor, cases: list[Case], out_dir: Path, resume: bool, info: Dist,
                source: str) -> None:
    """Predict, draw and score every case not done yet, streamed cases first; each case's rows are
    written as it finishes (what ``--resume`` reads)."""
    (out_dir / "predictions").mkdir(exist_ok=True)
    (out_dir / "slices").mkdir(exist_ok=True)
    done = read_case_rows(out_dir) if resume else {}
    if done:
        log.info("resuming %s: %d of %d cases already done", out_dir, len(done), len(cases))
    stacks = {c.id: s for c in cases if (s := streamed_stack(c.image, predictor.cfg)) is not None}  # headers only
    for case in (c for c in cases if c.id in stacks and c.id not in done):  # every rank takes a share of its slices
        if info.is_main:
            warn_if_streamed(predictor.cfg, case)
        rows = _test_streamed_case(predictor, case, stacks[case.id], out_dir, info)
        if info.is_main:
            write_case_rows(out_dir, case.id, rows)
    small = [c for c in cases if c.id not in stacks]
    with tqdm(shard(small, info), desc="test", unit="case", disable=not info.is_main or not small) as bar:
        for case in bar:  # the bar is closed (newline) on errors too
            if case.id not in done:
                done[case.id] = _test_case(predictor, case, out_dir, source)
                write_case_rows(out_dir, case.id, done[case.id])


def _report(name: str, out_dir: Path, cases: list[Case], kind: str, loss_curve: Path | None) -> dict | None:
    """The reports of every rank's cases, saying what was scored (with the run's loss curve, when tested
    from a run); None without labels."""
    done = read_case_rows(out_dir)
    rows = [row for case in cases for row in done[case.id]]
    if not rows:
        log.info("no labels: wrote predictions and slices only")
        return None
    summary = {**summarize(rows), "scored": kind, "scored_note": SCORED[kind]}
    if kind in ("selection", "training"):
        log.warning("scored %s", SCORED[kind])
    write_reports(rows, summary, out_dir, {c.id: f"slices/{c.id}.png" for c in cases}, f"Test of {name}", loss_curve)
    return summary
