#!/usr/bin/env python
"""Train a segmentation network.

    python train.py                                  # demo config on data/demo
    python train.py --config configs/smoke.yaml --set train.epochs=3 model.name=usegnet2
    python train.py --resume outputs/demo-20261123-101500
    python train.py --set data.root=/data/mine train.budget=30m   # own data: planned from the data
    python train.py --set data.root=/data/mine data.folds=5 train.budget=2h   # 5 folds sharing 2 h
    torchrun --nproc_per_node=2 train.py --config configs/smoke.yaml   # data-parallel
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import distributed
from pipeline.errors import UserError, exit_on_user_error, setup_logging
from pipeline.plan.planner import run_config
from pipeline.runtime import process_started
from pipeline.train.folds import TrainingInterrupted, train_run

DEFAULT_CONFIG = "configs/demo.yaml"


@exit_on_user_error
def main() -> None:
    started = process_started()  # a budget (train.budget) counts everything from the interpreter's start
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"YAML preset (default {DEFAULT_CONFIG}; --resume: the run's config.yaml)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. train.epochs=5 data.root=/data/ct")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue this run in its folder from checkpoints/last.pt")
    parser.add_argument("--plan", action="store_true", help="plan the keys a preset leaves open (own data: always)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    info = distributed.init()  # torchrun: join the process group; plain python: one process
    setup_logging(args.verbose, info.is_main)  # rank 0 speaks for the run; the others only warn
    if args.resume and args.config:
        parser.error("--resume continues with the run's own config.yaml; change keys with --set instead of --config")
    config = Path(args.resume) / "config.yaml" if args.resume else Path(args.config or DEFAULT_CONFIG)
    if args.resume and not config.is_file():
        raise UserError(f"{args.resume}: not a run folder (no config.yaml); pass the folder train.py created")
    cfg, plan = distributed.on_main(lambda: run_config(config, args.overrides, args.resume, args.config, args.plan),
                                    info)
    try:
        run_dir = train_run(cfg, args.resume, info, plan, started)  # data.folds=K: every fold, one folder
    except TrainingInterrupted as stop:
        if info.is_main:
            print(f"interrupted: {stop}", file=sys.stderr)
        sys.exit(130)
    finally:
        distributed.shutdown()
    if info.is_main:
        print(f"run folder: {run_dir}\nnext: python test.py --run {run_dir}")


if __name__ == "__main__":
    main()
