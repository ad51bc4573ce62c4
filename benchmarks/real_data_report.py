"""What ``benchmarks/real_data.py`` writes: the held-out error figure and the results page
(``benchmarks/results/<dataset>.md`` and its per-case rows), and the formatting they share."""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.io import load_image, reader_options  # noqa: E402
from pipeline.data.layouts import load_dataset  # noqa: E402
from pipeline.evaluate.figures import error_figure  # noqa: E402


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}" if abs(value) >= 10 else f"{value:.4f}"


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_figure(dataset: str, cfg, root: str, test_ids: list[str], test_dir: Path, figures_dir: Path,
                 crop: int | None = None) -> Path:
    """``<figures_dir>/<dataset>_errors.png`` for up to four held-out cases; returns its path."""
    cases = {c.id: c for c in load_dataset(root, cfg.data).training}
    rows = []
    for case_id in test_ids[:4]:
        case = cases[case_id]
        image, affine = load_image(case.image, **reader_options(cfg.data))
        label, _ = load_image(case.label, **reader_options(cfg.data, label=True))
        pred, _ = load_image(test_dir / "predictions" / f"{case_id}.nii.gz", label=True)
        if case.mask is not None:  # score and show inside the field of view only
            label = label * (load_image(case.mask, **reader_options(cfg.data, label=True))[0] > 0)
        rows.append((case_id, image, label, pred, affine))
    out = figures_dir / f"{dataset}_errors.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    error_figure(rows, out, crop=crop)
    print(f"figure: {shown_path(out)}")
    return out


def write_results(results_dir: Path, figure: Path, dataset, ref, lines, metrics, train_seconds, test_seconds,
                  train_cmd, test_cmd, test_ids, run_dir, levers, ablation_cmd, plain, ceiling) -> None:
    def shown(cmd: list[str]) -> str:
        return shlex.join(["python", *cmd[1:]])
    without = f"without {' / '.join(levers)}" if levers else "without test-time levers"
    table = [f"| metric | ours (mean of held-out) | median | {without} | seed | target |", "|---|---|---|---|---|---|"]
    for metric, ours, seed_value, target, met in lines:
        median = metrics[metric]["median"]
        table.append(f"| {metric} | {fmt(ours)}{' (' + met.strip() + ')' if met else ''} | {fmt(median)} | "
                     f"{fmt(plain[metric]) if plain else '-'} | {fmt(seed_value)} | {fmt(target)} |")
    split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    validated = f" and validated on {len(split['val'])} ({', '.join(split['val'])})" if split["val"] else ""
    text = "\n".join([
        f"# {dataset}: held-out quality of " + (f"`{ref['config']}`" if "--config" in train_cmd else
                                                 "the plan (train.py without a preset)"),
        "",
        f"`{shlex.join(['python', 'benchmarks/real_data.py', *sys.argv[1:]])}` on {cpu_name()}, "
        f"{os.cpu_count()} logical CPUs, no GPU; "
        f"torch {__import__('torch').__version__}, {time.strftime('%Y-%m-%d')}.",
        f"Trained on {len(split['train'])} cases{validated}; held out (scored with the last checkpoint): "
        f"{', '.join(test_ids)}.",
        "",
        *table,
        "",
        f"Training wall time: {train_seconds / 60:.1f} min (budget {ref['minutes']} min). "
        f"Testing: {test_seconds:.0f} s for {len(test_ids)} cases.",
        "",
        f"References: {ref['note']}",
        "",
        *([ceiling, ""] if ceiling else []),
        "Commands run by the script:",
        "",
        "```",
        shown(train_cmd),
        shown(test_cmd),
        *([shown(ablation_cmd)] if ablation_cmd else []),
        "```",
        "",
        f"Per-case rows: `{shown_path(results_dir / f'{dataset}_cases.csv')}`. Figure: `{shown_path(figure)}`.",
        "",
    ])
    out = results_dir / f"{dataset}.md"
    out.write_text(text, encoding="utf-8")
    shutil.copy(run_dir / "test" / "metrics.csv", out.with_name(f"{dataset}_cases.csv"))
    print(f"results: {shown_path(out)}")
