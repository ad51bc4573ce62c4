#!/usr/bin/env python
"""Test a trained run: predictions in each input's geometry, slice images, metrics, report.

    python test.py                                   # outputs/latest, best checkpoint, its test split
    python test.py --run outputs/demo-20261123-101500 --checkpoint last
    python test.py --data /data/ct_test              # every case of a dataset root
    python test.py --images scans/ [--labels masks/] --out results/
    python test.py --model model.zip --data /data/ct_test   # a model package, no run folder
    torchrun --nproc_per_node=2 test.py --run-dir RUN   # cases shared across ranks, one report
"""

from __future__ import annotations

import argparse

from pipeline import distributed
from pipeline.errors import exit_on_user_error, setup_logging
from pipeline.predict.run import run_test


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    network = parser.add_mutually_exclusive_group()
    network.add_argument("--run", "--run-dir", dest="run", default="outputs/latest",
                         help="run folder (default outputs/latest; --run-dir under torchrun, which claims --run)")
    network.add_argument("--model", metavar="PACKAGE", help="a model package (python -m pipeline.export) instead of "
                         "a run; needs --data or --images")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint path (default best)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="ROOT", help="test every case of this dataset root")
    source.add_argument("--images", metavar="DIR", help="test the image files of this folder")
    parser.add_argument("--labels", metavar="DIR", help="labels for --images, same file names")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN/test, or RUN/test-N if taken)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a stopped test in --out (default RUN/test): only missing cases run")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="inference settings, e.g. infer.overlap=0.5 infer.backend=torch")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if (args.labels and not args.images) or (args.model and args.checkpoint != "best"):
        parser.error("--labels needs --images" if args.labels and not args.images else "--model takes no --checkpoint")
    info = distributed.init()  # torchrun: each rank tests its share of the cases
    setup_logging(args.verbose, info.is_main)

    try:
        out_dir, summary = run_test(args.run, args.checkpoint, args.data, args.images, args.labels, args.out,
                                     args.overrides, args.resume, info, args.model)
    finally:
        distributed.shutdown()
    if not info.is_main:
        return
    print(f"predictions and slices: {out_dir}")
    if summary is not None:
        print(f"report: {out_dir / 'report.md'}")
        print(f"mean foreground Dice: {summary['mean_dice']:.4f} (scored: {summary['scored_note']})")


if __name__ == "__main__":
    main()
