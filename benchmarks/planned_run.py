"""A planned own-data run on a seeded held-out split, trained and tested once: what
``levers.py``, ``augmentation.py`` and ``ensemble.py`` compare side by side.

``train.py --set data.root=ROOT data.test_cases=[...] data.val_fraction=0 KEYS`` (no preset: the plan), then
``test.py --run RUN --checkpoint last`` (or ``best``); the wall seconds of each command are kept in
``times.json`` beside the run, and a folder already holding a tested run is read again instead of trained.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.layouts import load_dataset  # noqa: E402
from real_data import REFERENCES, held_out  # noqa: E402  (beside this file)


def planned_run(folder: Path, root: str, test_ids: list[str], keys: list[str],
                checkpoint: str = "last") -> tuple[Path, dict]:
    """(run folder, {"train_s", "test_s"}) of the planned run with ``keys`` in ``folder`` ({} for a run tested
    before ``times.json`` was kept)."""
    run, times = folder / "latest", folder / "times.json"
    if not (run / "test" / "summary.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        train = [sys.executable, "train.py", "--set", f"output_dir={folder}", f"data.root={root}",
                 "data.test_cases=[" + ",".join(test_ids) + "]", "data.val_fraction=0", *keys]
        test = [sys.executable, "test.py", "--run", str(run), "--checkpoint", checkpoint]
        seconds = {}
        for name, cmd in (("train_s", train), ("test_s", test)):
            start = time.perf_counter()
            with open(folder / f"{name[:-2]}.log", "w", encoding="utf-8") as f:
                if subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode:
                    sys.exit(f"error: {' '.join(cmd)} failed; see {folder / name[:-2]}.log")
            seconds[name] = round(time.perf_counter() - start, 1)
        times.write_text(json.dumps(seconds) + "\n", encoding="utf-8")
    return run.resolve(), json.loads(times.read_text(encoding="utf-8")) if times.is_file() else {}


def held_out_means(run: Path) -> dict:
    """Mean over the held-out cases of each metric of the one foreground class (``RUN/test/summary.json``)."""
    summary = json.loads((run / "test" / "summary.json").read_text(encoding="utf-8"))
    (foreground,) = summary["classes"].values()
    return {name: values["mean"] for name, values in foreground["metrics"].items()}


def run_log(run: Path) -> tuple[dict, int, list[dict]]:
    """The ``train`` section of ``run``'s configuration, its steps per epoch and its ``log.csv`` rows."""
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["train"]
    train_cases = len(json.loads((run / "split.json").read_text(encoding="utf-8"))["train"])
    with open(run / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return cfg, math.ceil((cfg.get("volumes_per_epoch") or train_cases) / cfg["batch_size"]), rows


def seeded_split(dataset: str, data: str | None) -> tuple[str, list[str]]:
    """The root of a reference dataset of ``real_data.py`` (``data``, else its preset's ``data.root``) and its
    seeded 4 held-out cases."""
    cfg = load_config(ROOT / REFERENCES[dataset]["config"])
    root = data or str((ROOT / cfg.data.root).resolve())
    return root, held_out([c.id for c in load_dataset(root, cfg.data).training], 4, cfg.train.seed)
