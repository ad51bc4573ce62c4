"""The model family compared on real data at an equal training budget.

    python benchmarks/compare_models.py la_heart --budget 10    # ../shared/datasets/LA_heart_h5/train, 3D
    python benchmarks/compare_models.py drive --budget 5        # DRIVE, single-slice (2D) networks
    python benchmarks/compare_models.py la_heart --models resunet unet

Every registry model trains on the split of ``benchmarks/real_data.py`` (the same held-out cases, the
rest for training, no validation cases) with the dataset preset's configuration, only ``model.name``
changed: the **same widths** for every network, so the table shows what each architecture does with
them (parameters are within 12 % of each other; MACs differ up to 7x).

The budget is wall-clock minutes of training on this machine, turned into a step count before any
training: each network's step is timed alone here first (``pipeline.plan.budget.time_steps``), and
its epochs are those that fill the budget less the planner's reserve. A fixed step count keeps the
comparison fair when the machine is shared during the hours the runs take.

Learning rate: the preset's for every model (docs/RESULTS.md says how each preset's was chosen); a
run whose training loss is not finite, or whose last quarter of epochs has a mean loss no lower than its
first quarter's, is redone at a fifth of it. A probe on validation cases per model was not affordable: at a
fifth of a 10-minute budget the slowest networks take ~20 steps, too few for a validation Dice to rank
learning rates.

Resumable model by model: a finished model keeps ``result.json`` in its folder under ``--out`` and
is skipped; an interrupted training resumes from its last checkpoint (``train.py --resume``). Deleting
a model's ``result.json`` re-tests its finished run (say, to time its inference alone again).
Writes ``benchmarks/results/compare_<dataset>.md`` and ``docs/figures/compare_<dataset>.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from models3d import MODEL_NAMES, build_from_config  # noqa: E402
from models3d.__main__ import count_macs  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.layouts import load_dataset  # noqa: E402
from pipeline.plan.budget import fit_schedule, time_steps  # noqa: E402
from pipeline.plan.planner import planned_config  # noqa: E402
from real_data import REFERENCES, held_out, run  # noqa: E402
from real_data_report import cpu_name  # noqa: E402

LR_RETRY = 0.2  # the factor of a redone run's learning rate
# the 2D U-SegNet paper's table, where this project's family comes from: Dice, parameters (M)
PAPER_2D = {"unet": (0.7856, 31.0), "usegnet1": (None, 3.51)}


def split_keys(root: str, test_ids: list[str]) -> list[str]:
    """The ``--set`` keys of the real_data.py split: these held-out cases, no validation cases."""
    return [f"data.root={root}", "data.test_cases=[" + ",".join(test_ids) + "]", "data.val_fraction=0"]


def model_config(preset: Config, name: str, keys: list[str]) -> Config:
    """The configuration ``train.py --config PRESET --set model.name=NAME KEYS`` trains: the preset over
    its plan (``plan: true``), untimed (the epochs are given)."""
    cfg, _ = planned_config([f"model.name={name}", *keys, "train.epochs=1"], ROOT / REFERENCES[preset.name]["config"],
                            timing=False)
    return cfg


def cost(cfg: Config) -> dict:
    """Parameters (M) and GMAC of one forward pass over a training patch, 1 input channel."""
    model = build_from_config(cfg.model, 1, len(cfg.data.labels), cfg.train.patch_size)
    x = torch.zeros(1, 1, *cfg.train.patch_size)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "gmac": count_macs(model, x) / 1e9}


def timings(preset: Config, models: list[str], keys: list[str], path: Path) -> dict:
    """Median seconds per training step of each model, timed alone before any training (kept in ``path``)."""
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    for name in models:
        if name not in known:
            cfg = model_config(preset, name, keys)
            known[name] = {"step_s": time_steps(cfg, 1, len(cfg.data.labels), steps=4), **cost(cfg)}
            print(f"{name}: {known[name]['step_s']:.2f} s per step, {known[name]['params_m']:.2f} M parameters, "
                  f"{known[name]['gmac']:.1f} GMAC", flush=True)
            path.write_text(json.dumps(known, indent=2) + "\n", encoding="utf-8")
    return known


def diverged(log_csv: Path) -> bool:
    """Whether a run's training loss went non-finite, or (over 4 epochs or more) its last quarter of
    epochs has a mean loss no lower than its first quarter's."""
    with open(log_csv, newline="", encoding="utf-8") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    if not all(math.isfinite(x) for x in losses):
        return True
    quarter = len(losses) // 4
    return quarter > 0 and sum(losses[-quarter:]) >= sum(losses[:quarter])


def train(folder: Path, base_cmd: list[str], lr: float) -> Path:
    """The finished run of one attempt at ``lr`` in ``folder`` (resumed when an earlier call was cut off)."""
    folder.mkdir(parents=True, exist_ok=True)
    latest = folder / "latest"
    resumable = latest.exists() and (latest.resolve() / "checkpoints" / "last.pt").exists()
    if not (resumable and _finished(latest)):
        cmd = ([sys.executable, "train.py", "--resume", str(latest.resolve())] if resumable
               else [*base_cmd, f"output_dir={folder}", f"train.lr={lr}"])
        run(cmd, folder / f"train-{time.strftime('%Y%m%d-%H%M%S')}.log")
    return latest.resolve()


def _finished(latest: Path) -> bool:
    cfg = load_config(latest.resolve() / "config.yaml")
    log_csv = latest.resolve() / "log.csv"
    if not log_csv.exists():
        return False
    with open(log_csv, newline="", encoding="utf-8") as f:
        return max((int(r["epoch"]) for r in csv.DictReader(f)), default=0) >= cfg.train.epochs


def compare_one(name: str, preset: Config, root: str, test_ids: list[str], budget_min: float, timed: dict,
                work: Path) -> dict:
    """Train, redo at a lower lr if it diverged, and test ``name``; the result row (kept as result.json)."""
    done = work / name / "result.json"
    if done.exists():
        return json.loads(done.read_text(encoding="utf-8"))
    n_train = len(load_dataset(root, preset.data).training) - len(test_ids)
    per_epoch = math.ceil((preset.train.volumes_per_epoch or n_train) / preset.train.batch_size)
    epochs = fit_schedule(budget_min * 60, timed["step_s"], per_epoch).epochs
    base_cmd = [sys.executable, "train.py", "--config", REFERENCES[preset.name]["config"], "--set",
                f"model.name={name}", *split_keys(root, test_ids), f"train.epochs={epochs}"]
    lr = preset.train.lr
    run_dir = train(work / name / f"lr{lr:g}", base_cmd, lr)
    if diverged(run_dir / "log.csv"):
        print(f"{name}: training loss did not fall at lr {lr:g}; redone at {lr * LR_RETRY:g}", flush=True)
        lr *= LR_RETRY
        run_dir = train(work / name / f"lr{lr:g}", base_cmd, lr)
    tested = work / name / "test"  # this script's own scratch: an interrupted test is redone from scratch
    shutil.rmtree(tested, ignore_errors=True)
    start = time.perf_counter()
    run([sys.executable, "test.py", "--run", str(run_dir), "--checkpoint", "last", "--out", str(tested)],
        work / name / "test.log")
    test_s = time.perf_counter() - start
    summary = json.loads((tested / "summary.json").read_text(encoding="utf-8"))
    (metrics,) = [c["metrics"] for c in summary["classes"].values()]  # one foreground class in both datasets
    with open(run_dir / "log.csv", newline="", encoding="utf-8") as f:
        train_s = sum(float(r["seconds"]) for r in csv.DictReader(f))
    result = {"model": name, **timed, "lr": lr, "epochs": epochs, "steps": epochs * per_epoch,
              "train_min": train_s / 60, "test_s_per_case": test_s / len(test_ids),
              **{f"{m}_{s}": metrics[m][s] for m in ("dice", "hd95", "nsd") if m in metrics for s in ("mean", "std")}}
    done.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{name}: Dice {result['dice_mean']:.4f} after {result['steps']} steps ({result['train_min']:.1f} min)",
          flush=True)
    return result


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def loss_at(work: Path, row: dict, steps: int) -> float | None:
    """Mean training loss of the epoch in which ``row``'s run reached ``steps`` steps (from its log.csv)."""
    log_csv = work / row["model"] / f"lr{row['lr']:g}" / "latest" / "log.csv"
    epoch = max(1, math.ceil(steps / (row["steps"] // row["epochs"])))
    with open(log_csv, newline="", encoding="utf-8") as f:
        return next((float(r["train_loss"]) for r in csv.DictReader(f) if int(r["epoch"]) == epoch), None)


def table(rows: list[dict], dataset: str, work: Path) -> str:
    fewest = min(r["steps"] for r in rows)
    lines = ["| model | params (M) | GMAC / forward | s / step | steps in budget | lr | training (min) | "
             f"held-out Dice (mean ± std) | HD95 | NSD | s / case (test.py) | training loss at step {fewest} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: -(r["dice_mean"] or 0)):
        lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['gmac']:.1f} | {r['step_s']:.2f} | {r['steps']} | "
                     f"{r['lr']:g} | {r['train_min']:.1f} | {fmt(r['dice_mean'])} ± {fmt(r['dice_std'])} | "
                     f"{fmt(r.get('hd95_mean'), 2)} | {fmt(r.get('nsd_mean'))} | {r['test_s_per_case']:.1f} | "
                     f"{fmt(loss_at(work, r, fewest))} |")
    lines += ["", f"The last column is each run's mean training loss (Dice + cross-entropy) in the epoch where it "
              f"reached {fewest} steps, the most that every model reached: what a step buys, at equal steps. Its "
              "learning rate had then decayed by a share that differs per model (the poly decay runs over each "
              "model's own step count), so read it as a hint, not a measurement at equal compute."]
    if dataset == "drive":
        lines += ["", "The 2D U-SegNet table this family comes from (as quoted in the issue that asked for this one; "
                  "its own training, not this budget): "
                  + "; ".join(f"{m} Dice {fmt(d)}, {p} M parameters" if d else f"{m} {p} M parameters"
                              for m, (d, p) in PAPER_2D.items()) + "."]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, label in ((axes[0], "params_m", "parameters (M)"),
                           (axes[1], "step_s", "seconds per training step (log scale): the cost of a step")):
        for i, r in enumerate(sorted(rows, key=lambda r: r["dice_mean"])):
            ax.errorbar(r[key], r["dice_mean"], yerr=r["dice_std"], fmt="o", capsize=3)
            ax.annotate(r["model"], (r[key], r["dice_mean"]), textcoords="offset points",
                        xytext=(6, 6) if i % 2 else (6, -12))  # alternate sides: close points stay legible
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    steps = [r["step_s"] for r in rows]
    axes[1].set_xlim(min(steps) / 1.5, max(steps) * 1.5)
    axes[1].set_xticks([t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if min(steps) / 1.5 <= t <= max(steps) * 1.5])
    axes[1].xaxis.set_major_formatter(ScalarFormatter())
    axes[1].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel("held-out Dice (mean ± std over cases)")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(REFERENCES))
    parser.add_argument("--budget", type=float, default=None, help="training minutes per model (la_heart 10, drive 5)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    parser.add_argument("--out", default="/tmp/compare_models", help="runs, logs and results per model (resumable)")
    parser.add_argument("--holdout", type=int, default=4, help="held-out cases (default 4, as real_data.py)")
    args = parser.parse_args()

    budget = args.budget or {"la_heart": 10.0, "drive": 5.0}[args.dataset]
    preset = load_config(ROOT / REFERENCES[args.dataset]["config"])  # its name is the dataset's key
    root = str((ROOT / preset.data.root).resolve())
    ids = [c.id for c in load_dataset(root, preset.data).training]
    test_ids = held_out(ids, args.holdout, preset.train.seed)
    work = Path(args.out) / f"{args.dataset}-{budget:g}min"
    work.mkdir(parents=True, exist_ok=True)
    print(f"{args.dataset}: {len(ids) - len(test_ids)} training cases, held out {', '.join(test_ids)}; "
          f"{budget:g} min per model; work in {work}", flush=True)
    keys = split_keys(root, test_ids)
    timed = timings(preset, args.models, keys, work / "timings.json")
    trained = model_config(preset, args.models[0], keys)  # widths and patch are the preset's and its plan's
    rows = [compare_one(m, preset, root, test_ids, budget, timed[m], work) for m in args.models]

    title = f"{args.dataset}: {budget:g} min of training per model on {cpu_name()}, {torch.get_num_threads()} threads"
    figure = ROOT / "docs" / "figures" / f"compare_{args.dataset}.png"
    plot(rows, figure, title)
    text = (f"# {title}\n\n`python benchmarks/compare_models.py {args.dataset} --budget {budget:g}`\n\n"
            f"Held-out cases ({len(test_ids)}, never used for a choice): {', '.join(test_ids)}. "
            f"Same widths for every model: {list(trained.model.channels)}, patch {list(trained.train.patch_size)}.\n\n"
            f"{table(rows, args.dataset, work)}\n\n"
            f"![Dice against parameters and step time](../../docs/figures/{figure.name})\n")
    out = ROOT / "benchmarks" / "results" / f"compare_{args.dataset}.md"
    out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
