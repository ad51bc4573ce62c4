"""``python -m pipeline.export``: a run's trained network as a model package, and a package described.

    python -m pipeline.export --run outputs/latest [--checkpoint best|last] --out model.zip
    python -m pipeline.export --inspect model.zip

The package (``package.py``) holds the ONNX graph, the weights, the inference
configuration with the run's decided post-processing folded in, the label names
and the provenance: the code's commit, the training configuration, the plan with
its reasons (the dataset's fingerprint in numbers), the split's sizes, the
validation Dice of the checkpoint and the run's last test summary, if any.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from pathlib import Path
from typing import Any

from ..config import config_from_dict, merge_overrides
from ..data.normalisation import Normalisation
from ..errors import UserError, exit_on_user_error, setup_logging
from ..checkpoint import load_checkpoint, weights_digest
from .folds import fold_dirs
from .onnx_graph import to_onnx
from .package import NETWORK, WEIGHTS, Package, created, read_package, source_commit, write_package
from .postprocess import decided_overrides
from .predictor import load_network

log = logging.getLogger(__name__)


def export_run(run_dir: str | Path, checkpoint: str = "best", out: str | Path = "model.zip") -> Path:
    """Write the package of ``run_dir``'s ``best`` / ``last`` checkpoint (or a checkpoint path) to ``out``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); pass --run RUN_DIR")
    folds = fold_dirs(run_dir)
    if folds:  # a package holds one network
        raise UserError(f"{run_dir}: a cross-validation folder ({len(folds)} folds); export one fold, e.g. "
                        f"--run {folds[0]}")
    path = run_dir / "checkpoints" / f"{checkpoint}.pt" if checkpoint in ("best", "last") else Path(checkpoint)
    state = load_checkpoint(path)
    decided = decided_overrides(run_dir, weights_digest(state["model"]))
    raw = merge_overrides(state["config"], decided) if decided else state["config"]
    # the engine is the machine's choice, not the run's; deep supervision's heads train only: the package is
    # the plain network
    raw = merge_overrides(raw, ["infer.backend=auto", "model.deep_supervision=false"])
    cfg = config_from_dict(raw, f"{path} (config)")
    labels = {int(k): v for k, v in state["labels"].items()}
    in_channels = int(state["in_channels"])
    weights = {k: v for k, v in state["model"].items() if not k.startswith("aux_heads.")}
    model = load_network(cfg, in_channels, labels, weights, path)
    log.info("exporting %s %s to ONNX (patch %s)", cfg.model.name, cfg.model.channels, cfg.train.patch_size)
    meta = {
        "name": run_dir.resolve().name, "created": created(), "config": raw,
        "labels": {str(k): v for k, v in labels.items()}, "in_channels": in_channels,
        "inference": inference_record(cfg), "provenance": provenance(run_dir, path, state, decided),
    }
    return write_package(meta, to_onnx(model, in_channels, cfg.train.patch_size), model.state_dict(), out)


def inference_record(cfg) -> dict[str, Any]:
    """What inference needs, in one place for a reader of ``package.json`` (the config holds the same)."""
    d, i = cfg.data, cfg.infer
    return {
        "normalisation": Normalisation.from_config(d).to_dict(),
        "before_normalisation": {"channel": d.channel, "contrast": d.contrast, "crop_foreground": d.crop_foreground},
        "spacing_mm": d.spacing, "default_spacing_mm": d.default_spacing, "patch": cfg.train.patch_size,
        "overlap": i.overlap, "blend": i.blend, "flips": i.tta, "largest_component": i.largest_component,
        "fill_holes": i.fill_holes, "model": {"name": cfg.model.name, "channels": cfg.model.channels},
    }


def provenance(run_dir: Path, checkpoint: Path, state: dict, decided: list[str]) -> dict[str, Any]:
    """Where the network came from: code, checkpoint, plan, split sizes, scores."""
    record: dict[str, Any] = {"commit": source_commit(), "run": str(run_dir.resolve()), "checkpoint": checkpoint.name,
                              "epoch": int(state["epoch"]), "decided_postprocessing": decided}
    best = float(state.get("best_metric", float("-inf")))
    if best > float("-inf"):  # -inf until a validation ran
        record["validation_dice"] = round(best, 4)
    plan = run_dir / "plan.yaml"
    if plan.is_file():
        record["plan"] = plan.read_text(encoding="utf-8")
    split = run_dir / "split.json"
    if split.is_file():
        cases = json.loads(split.read_text(encoding="utf-8"))
        record["split"] = {k: len(cases.get(k, [])) for k in ("train", "val", "test")}
    summary = run_dir / "test" / "summary.json"
    if summary.is_file():
        test = json.loads(summary.read_text(encoding="utf-8"))
        record["test"] = {k: test.get(k) for k in ("mean_dice", "scored", "scored_note")}
    log_csv = run_dir / "log.csv"
    if log_csv.is_file():
        with log_csv.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        record["epochs_logged"] = len(rows)
    return record


def describe(package: Package) -> str:
    """A few lines on a package: size, inputs, labels, inference settings, provenance."""
    meta, inference = package.meta, package.meta.get("inference", {})
    size = package.path.stat().st_size if package.path.is_file() else \
        sum((package.path / n).stat().st_size for n in (NETWORK, WEIGHTS))
    parameters = sum(t.numel() for t in package.weights.values() if t.is_floating_point())
    prov = meta.get("provenance", {})
    lines = [
        f"{package.path}: {meta['format']} version {meta['version']}, ONNX opset {meta['opset']}, "
        f"{size / 2**20:.1f} MB",
        f"  network: {inference.get('model', {}).get('name')} {inference.get('model', {}).get('channels')}, "
        f"{parameters:,} parameters",
        f"  input: (B, {meta['in_channels']}, {', '.join(map(str, inference.get('patch', [])))}) float32 windows "
        "of the normalised image",
        f"  labels: {', '.join(f'{k}={v}' for k, v in package.labels.items())}",
        f"  normalisation: {json.dumps(inference.get('normalisation'))}",
        f"  spacing: {inference.get('spacing_mm') or 'native grid'}; overlap {inference.get('overlap')}, "
        f"{inference.get('blend')} blending, flips {inference.get('flips')}, largest component "
        f"{inference.get('largest_component')}, fill holes {inference.get('fill_holes')}",
        f"  from: {prov.get('run')} ({prov.get('checkpoint')}, epoch {prov.get('epoch')}), "
        f"commit {prov.get('commit')}, created {meta.get('created')}",
    ]
    if "validation_dice" in prov or "test" in prov:
        test = prov.get("test") or {}
        lines.append(f"  scores: validation Dice {prov.get('validation_dice', 'none')}, test mean Dice "
                     f"{test.get('mean_dice', 'none')} ({test.get('scored', 'not tested')})")
    return "\n".join(lines)


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/latest", help="run folder (default outputs/latest)")
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint path (default best)")
    parser.add_argument("--out", default="model.zip", help="a .zip file, or a new folder (default model.zip)")
    parser.add_argument("--inspect", metavar="PACKAGE", help="describe a package and check it; export nothing")
    args = parser.parse_args()
    setup_logging()
    if args.inspect:
        print(describe(read_package(args.inspect)))
        return
    out = export_run(args.run, args.checkpoint, args.out)
    print(describe(read_package(out)))
