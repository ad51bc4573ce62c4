"""Batch evaluation of a folder of predictions against a folder of labels.

    python -m pipeline.evaluate --pred DIR --ref DIR --out DIR [--labels 1,2] [--mask DIR] [--workers N]

Files are paired by case id (file name without its suffix); spacing is read from
the reference files. Writes ``metrics.csv``, ``summary.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from tqdm import tqdm

from . import distributed
from .distributed import Dist, barrier, on_main, shard
from .errors import UserError, exit_on_user_error, setup_logging
from .evaluation import evaluate_files
from .io import case_id, is_volume_file
from .report import read_case_rows, write_case_rows, write_reports


def _files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise UserError(f"{folder}: {what} folder not found")
    files = {case_id(p): p for p in sorted(folder.iterdir()) if is_volume_file(p)}
    if not files:
        raise UserError(f"{folder}: no {what} files (.nii.gz, .nii, .mha, .nrrd)")
    return files


def pair_files(pred_dir: Path, ref_dir: Path, mask_dir: Path | None = None) -> list[tuple[str, Path, Path, Path | None]]:
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


def _evaluate_pair(item: tuple, labels: dict[int, str] | None) -> list[dict]:
    case, pred, ref, mask = item
    return evaluate_files(case, pred, ref, labels, mask)


def evaluate_folder(
    pred_dir: Path, ref_dir: Path, out_dir: Path, labels: Sequence[int] | None = None,
    mask_dir: Path | None = None, workers: int | None = None, info: Dist = Dist(),
) -> dict | None:
    """Evaluate every pair in parallel processes and write the reports; returns the summary.

    Cases already recorded in ``out_dir/cases/`` (a stopped earlier call) are not evaluated again.
    Under torchrun each rank evaluates its share and rank 0 alone writes the reports (others get None).
    """
    pairs = pair_files(pred_dir, ref_dir, mask_dir)
    names = label_names(ref_dir, labels)
    done = read_case_rows(out_dir)
    todo = shard([p for p in pairs if p[0] not in done], info)
    workers = 1 if info.enabled else max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    job = partial(_evaluate_pair, labels=names)
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
    return write_reports(rows, out_dir, title=f"Evaluation of {pred_dir}")


def _parse_labels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        ids = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--labels {text!r}: expected label ids separated by commas, e.g. 1,2") from None
    if not ids or any(i < 1 for i in ids):
        raise UserError(f"--labels {text!r}: expected foreground label ids (1 or more)")
    return ids


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    parser.add_argument("--ref", required=True, type=Path, help="folder of reference label maps")
    parser.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    parser.add_argument("--labels", help="foreground label ids to evaluate, e.g. 1,2 (default: all found)")
    parser.add_argument("--mask", type=Path, help="folder of field-of-view masks (metrics inside the mask)")
    parser.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    parser.add_argument("--resume", action="store_true", help="continue a stopped evaluation in --out")
    args = parser.parse_args(argv)
    info = distributed.init()  # torchrun: cases shared across ranks
    setup_logging()
    def check_out() -> None:
        if not args.resume and args.out.exists() and any(args.out.iterdir()):
            raise UserError(f"{args.out}: output folder exists and is not empty; choose another --out or pass --resume")

    on_main(check_out, info)
    try:
        summary = evaluate_folder(args.pred, args.ref, args.out, _parse_labels(args.labels), args.mask,
                                  args.workers, info)
    finally:
        distributed.shutdown()
    if summary is None:
        return
    print(f"report: {args.out / 'report.md'}")
    if summary["mean_dice"] is not None:
        print(f"mean foreground Dice: {summary['mean_dice']:.4f}")


if __name__ == "__main__":
    main()
