"""Do two revisions feed training the same volumes? The deterministic chain (read, reorient,
resample, crop, normalise, pad: what training caches once) is run on every training case by
each revision's own code, and the images and labels are compared.

    git worktree add /tmp/before 85de194
    python benchmarks/normalisation_parity.py --before /tmp/before --config configs/la_heart.yaml

The configuration is resolved once by this tree (the plan without its timed schedule, which only sets
epochs) and given to both sides as a YAML file, so only the code differs. Identical inputs mean a retrain
draws the same crops from the same volumes: the random part of training is unchanged between the two.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def dump(tree: Path, config: Path, out: Path) -> None:
    """Run ``tree``'s deterministic chain on every training case of ``config`` into ``out`` (npz)."""
    sys.path.insert(0, str(tree))
    from pipeline.config import load_config
    from pipeline.data.layouts import load_dataset
    from pipeline.data.transforms import IMAGE, LABEL, build_transforms

    cfg = load_config(config)
    chain = build_transforms(cfg, train=False)
    arrays = {}
    for case in load_dataset(cfg.data.root, cfg.data).training:
        item = chain({IMAGE: str(case.image), LABEL: str(case.label)})
        arrays[f"{case.id}/image"] = np.asarray(item[IMAGE])
        arrays[f"{case.id}/label"] = np.asarray(item[LABEL])
    np.savez(out, **arrays)


def resolved_config(config: Path, overrides: list[str], out: Path) -> None:
    """This tree's configuration for ``config`` (planned when the preset plans), saved to ``out``."""
    sys.path.insert(0, str(ROOT))
    from pipeline.config import load_config, save_config
    from pipeline.plan.planner import planned_config

    cfg = load_config(config, overrides)
    if cfg.plan:
        cfg, _ = planned_config(overrides, config, timing=False)
    save_config(cfg, out)


def compare(before: Path, after: Path) -> int:
    """Print one row per case and return how many differ."""
    old, new = np.load(before), np.load(after)
    differing = 0
    print("| case | image shape | max abs difference | labels equal |\n|---|---|---|---|")
    for key in sorted(k for k in new.files if k.endswith("/image")):
        case = key.rsplit("/", 1)[0]
        a, b = old[key], new[key]
        same_shape = a.shape == b.shape
        diff = float(np.abs(a.astype(np.float64) - b).max()) if same_shape else float("inf")
        labels = same_shape and np.array_equal(old[f"{case}/label"], new[f"{case}/label"])
        differing += diff > 0 or not labels
        print(f"| {case} | {tuple(b.shape)} | {diff:.3g} | {labels} |")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a worktree of the earlier revision")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    parser.add_argument("--dump", nargs=2, type=Path, metavar=("CONFIG_YAML", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        return dump(args.before, *args.dump)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        resolved_config(args.config, args.overrides, tmp / "config.yaml")
        for side, tree in (("before", args.before.resolve()), ("after", ROOT)):
            subprocess.run([sys.executable, __file__, "--before", str(tree), "--config", str(args.config),
                            "--dump", str(tmp / "config.yaml"), str(tmp / f"{side}.npz")], check=True, cwd=ROOT)
        differing = compare(tmp / "before.npz", tmp / "after.npz")
    print(f"\n{differing} case(s) differ between {args.before} and this tree")


if __name__ == "__main__":
    main()
