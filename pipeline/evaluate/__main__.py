"""Batch evaluation of a folder of predictions against a folder of labels.

    python -m pipeline.evaluate --pred DIR --ref DIR --out DIR [--labels 1,2] [--mask DIR] [--workers N]
        [--metrics dice nsd ...] [--nsd-tolerance MM [MM ...]] [--tubular 1 ...]

Files are paired by case id (file name without its suffix); spacing is read from
the reference files. Slice stacks (folders of slices, or case folders with
``labels/``) are compared slab by slab, in memory that does not grow with them. Writes ``metrics.csv``,
``summary.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .. import distributed
from ..config import REPORT_METRICS, config_from_dict
from ..distributed import on_main
from ..errors import UserError, exit_on_user_error, setup_logging
from .folder import evaluate_folder
from .rows import MetricOptions


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


def _options(args: argparse.Namespace) -> MetricOptions:
    """The metric options of the flags, checked as the configuration keys they stand for."""
    evaluate = {"metrics": args.metrics, "nsd_tolerance_mm": args.nsd_tolerance}
    raw = {"evaluate": {k: v for k, v in evaluate.items() if v}, "data": {"tubular_classes": args.tubular or []}}
    return MetricOptions.from_config(config_from_dict(raw, "--metrics / --nsd-tolerance / --tubular"))


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
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel size in mm of slice stacks, which carry none (default 1 1 1)")
    parser.add_argument("--metrics", nargs="+", metavar="NAME",
                        help=f"metrics to compute (default: all; Dice always): {', '.join(REPORT_METRICS)}")
    parser.add_argument("--nsd-tolerance", type=float, nargs="+", metavar="MM",
                        help="normalised surface Dice tolerance in mm, one or one per class (default 1)")
    parser.add_argument("--tubular", type=int, nargs="+", metavar="ID",
                        help="label ids of tubular classes (vessels, airways): adds clDice for them")
    args = parser.parse_args(argv)
    options = _options(args)
    info = distributed.init()  # torchrun: cases shared across ranks
    setup_logging()
    def check_out() -> None:
        if not args.resume and args.out.exists() and any(args.out.iterdir()):
            raise UserError(f"{args.out}: output folder exists and is not empty; choose another --out or pass --resume")

    on_main(check_out, info)
    try:
        summary = evaluate_folder(args.pred, args.ref, args.out, _parse_labels(args.labels), args.mask,
                                  args.workers, info, tuple(args.spacing) if args.spacing else None, options)
    finally:
        distributed.shutdown()
    if summary is None:
        return
    print(f"report: {args.out / 'report.md'}")
    if summary["mean_dice"] is not None:
        print(f"mean foreground Dice: {summary['mean_dice']:.4f}")


if __name__ == "__main__":
    main()
