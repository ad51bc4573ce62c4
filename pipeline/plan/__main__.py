"""Fingerprint a dataset and plan its configuration for a time budget on this machine.

    python -m pipeline.plan --data ROOT [--budget 30m] [--out plan.yaml]
    python -m pipeline.plan --data ROOT --set data.layout=paired data.channel=1   # the reader's options

Prints what the data holds (spacings, shapes, foreground intensities, classes), then every planned key
with the reason it was chosen. The schedule is fitted to the budget from a few real training steps
timed here (``--no-timing`` skips them). ``--out`` writes the plan as a preset, reasons as comments;
``train.py --set data.root=ROOT`` plans the same way by itself.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from ..config import load_config
from ..errors import UserError, exit_on_user_error, setup_logging
from .fingerprint import describe
from .planner import DEFAULT_BUDGET, plan, plan_yaml


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--budget", help=f"training time, e.g. 30m, 1.5h (default {DEFAULT_BUDGET})")
    parser.add_argument("--out", type=Path, help="write the plan to this YAML file (a new file)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="keys you decide (they win over the plan), e.g. data.layout=paired")
    parser.add_argument("--no-timing", action="store_true", help="skip timing training steps (no schedule)")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("monai").setLevel(logging.WARNING)
    if args.out is not None and args.out.exists():
        raise UserError(f"{args.out}: exists; choose a new --out (the plan never overwrites a file)")
    overrides = [f"data.root={args.data}", *args.overrides] + ([f"train.budget={args.budget}"] if args.budget else [])
    base = load_config(None, overrides)
    found, choices = plan(base, overrides, timing=not args.no_timing)
    print(f"dataset {args.data}")
    for line in describe(found):
        print(f"  {line}")
    print("plan:")
    width = max(len(c.key) for c in choices)
    for choice in choices:
        print(f"  {choice.key:<{width}} = {choice.value!s:<18} {choice.reason}")
    if args.out is not None:
        args.out.write_text(plan_yaml(choices), encoding="utf-8")
        print(f"wrote {args.out}: train with python train.py --config {args.out} --set data.root={args.data}")


if __name__ == "__main__":
    main()
