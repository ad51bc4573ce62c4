"""Batch evaluation of a folder of predictions against a folder of labels (``python -m pipeline.evaluate``).

Files are paired by case id (file name without its suffix); spacing is read from
the reference files. Writes ``metrics.csv``, ``summary.json`` and ``report.md``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from ..data.io import IMAGE_2D_SUFFIXES, VOLUME_SUFFIXES, case_id, list_images, spacing_or_default
from ..data.segmentation_files import CLINICAL_SUFFIXES
from ..data.stack import SliceStack, stack_statistics
from ..distributed import Dist, barrier, shard
from ..errors import UserError
from .report import read_case_rows, write_case_rows, write_reports
from .rows import MetricOptions, evaluate_files, summarize
from .slabs import score_stack

log = logging.getLogger(__name__)


def _files(folder: Path, what: str) -> dict[str, Path]:
    """Case id -> volume file, 2D image (a single-slice case, e.g. a retina), or slice stack: a subfolder
    of slices (``predictions/<case>/`` of test.py) or a case folder holding ``labels/`` (the SenNet layout)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: {what} folder not found")
    files = {case_id(p): p for p in list_images(folder, VOLUME_SUFFIXES + IMAGE_2D_SUFFIXES)
             if not p.name.lower().endswith(CLINICAL_SUFFIXES)}  # the same prediction for Slicer or PACS
    if any(p.suffix.lower() in IMAGE_2D_SUFFIXES for p in files.values()):
        log.info("%s: 2D images are scored one by one as single-slice cases; to score a slice stack as one "
                 "volume, pass the folder that holds its folder", folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        stack = sub / "labels" if (sub / "labels").is_dir() else sub
        if any(f.name.lower().endswith(IMAGE_2D_SUFFIXES) for f in stack.iterdir()):
            files[sub.name] = stack
    if not files:
        raise UserError(f"{folder}: no {what} files (.nii.gz, .nii, .mha, .nrrd, .png, .tif) or slice stacks "
                        "(folders of .tif, .png)")
    return files


def pair_files(pred_dir: Path, ref_dir: Path,
               mask_dir: Path | None = None) -> list[tuple[str, Path, Path, Path | None]]:
    """(case, prediction, reference, mask) for every case; UserError listing unpaired files."""
    preds, refs = _files(pred_dir, "prediction"), _files(ref_dir, "reference")
    masks = _files(mask_dir, "mask") if mask_dir is not None else {}
    unpaired = sorted(set(preds) ^ set(refs))
    if unpaired:
        names = [str(preds.get(c) or refs.get(c)) for c in unpaired]
        raise UserError(f"{len(unpaired)} file(s) without a partner (pairing is by file name): {', '.join(names[:6])}"
                        + (" ..." if len(names) > 6 else ""))
    if mask_dir is not None:
        missing = sorted(set(refs) - set(masks))
        if missing:
            raise UserError(f"{mask_dir}: no mask for case(s) {', '.join(missing[:6])}")
    return [(c, preds[c], refs[c], masks.get(c)) for c in sorted(refs)]


def label_names(ref_dir: Path, ids: Sequence[int] | None) -> dict[int, str] | None:
    """Names from a dataset.json beside the reference folder when there is one; None means 'every label found'."""
    names: dict[int, str] = {}
    meta = ref_dir.parent / "dataset.json"
    if meta.is_file():
        try:
            names = {int(k): str(v) for k, v in json.loads(meta.read_text(encoding="utf-8")).get("labels", {}).items()}
        except (ValueError, AttributeError, json.JSONDecodeError):
            names = {}
    if ids is None:
        return {k: v for k, v in names.items() if k != 0} or None
    return {i: names.get(i, f"label {i}") for i in ids}


def _evaluate_pair(item: tuple, labels: dict[int, str] | None, spacing: tuple[float, float, float] | None,
                   options: MetricOptions) -> list[dict]:
    case, pred, ref, mask = item
    if pred.is_dir() or ref.is_dir():  # slice stacks: slab by slab, in bounded memory
        if not (pred.is_dir() and ref.is_dir()) or mask is not None:
            raise UserError(f"{pred}: a slice stack is compared with a slice stack, without masks ({ref})")
        pred_stack, ref_stack = SliceStack(pred, label=True), SliceStack(ref, label=True)
        if labels is None:
            found = set().union(*(stack_statistics(s, label=True).counts for s in (pred_stack, ref_stack)))
            labels = {i: f"label {i}" for i in range(1, max(max(found), 1) + 1)}
        return score_stack(pred_stack, ref_stack, case, {0: "background", **labels}, spacing_or_default(spacing),
                           options)
    return evaluate_files(case, pred, ref, labels, mask, options)


def evaluate_folder(
    pred_dir: Path, ref_dir: Path, out_dir: Path, labels: Sequence[int] | None = None,
    mask_dir: Path | None = None, workers: int | None = None, info: Dist = Dist(),
    stack_spacing: tuple[float, float, float] | None = None, options: MetricOptions = MetricOptions(),
) -> dict | None:
    """Evaluate every pair in parallel processes and write the reports (the metrics of ``options``);
    returns the summary.

    Slice stacks (which carry no voxel size: ``stack_spacing`` mm, default 1) are scored slab by slab.

    Cases already recorded in ``out_dir/cases/`` (a stopped earlier call) are not evaluated again.
    Under torchrun each rank evaluates its share and rank 0 alone writes the reports (others get None).
    """
    pairs = pair_files(pred_dir, ref_dir, mask_dir)
    names = label_names(ref_dir, labels)
    done = read_case_rows(out_dir)
    todo = shard([p for p in pairs if p[0] not in done], info)
    workers = 1 if info.enabled else max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    job = partial(_evaluate_pair, labels=names, spacing=stack_spacing, options=options)
    with tqdm(total=len(todo), desc="evaluate", unit="case", disable=not info.is_main) as bar:
        if workers == 1:
            results = map(job, todo)
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(job, todo)
        try:
            for (case, *_), case_rows in zip(todo, results):
                write_case_rows(out_dir, case, case_rows)
                done[case] = case_rows
                bar.update()
        finally:
            if workers > 1:
                pool.shutdown(cancel_futures=True)
    barrier(info)
    if not info.is_main:
        return None
    done = read_case_rows(out_dir)  # every rank's cases
    rows = [row for case, *_ in pairs for row in done[case]]
    summary = summarize(rows)
    write_reports(rows, summary, out_dir, title=f"Evaluation of {pred_dir}")
    return summary
