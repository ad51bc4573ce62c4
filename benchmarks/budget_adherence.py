"""Do planned runs end within their budget? Wall time of ``train.py`` from its start to its exit, for
runs planned from the data alone (``--set data.root=DATA train.budget=B``), fresh and killed then resumed.

    python -m pipeline.synthetic --out data/demo
    python benchmarks/budget_adherence.py --budgets 5m 15m 30m --out /tmp/budget

A killed run gets SIGKILL (no chance to save) at ``--kill-at`` of its budget and is resumed at once with
``train.py --resume RUN``; its wall time is the sum of both processes. The table says the epochs each run
trained, its wall time and the ratio to the budget; the goal is 0.97-1.03. Run it alone: the budget
clock keeps time as it finds it, so a busy machine gives fewer epochs, not a longer run.
"""

from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _train(args: list[str], log: Path, kill_after: float | None = None) -> float:
    """Wall seconds of ``python train.py ARGS`` (killed after ``kill_after`` s when given), output in ``log``."""
    with log.open("a", encoding="utf-8") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, stdout=out, stderr=out)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        wall = time.perf_counter() - start
    if kill_after is None and proc.returncode != 0:
        sys.exit(f"train.py {' '.join(args)} failed ({proc.returncode}); see {log}")
    return wall


def _epochs(run: Path) -> int:
    if not (run / "log.csv").is_file():  # killed before its first epoch ended
        return 0
    with (run / "log.csv").open(encoding="utf-8") as f:
        return len(list(csv.DictReader(f)))


def measure(data: Path, budget: str, out: Path, kill_at: float | None) -> dict:
    """One planned run of ``budget`` on ``data`` (killed at ``kill_at`` of it and resumed, when given)."""
    from pipeline.config_rules import budget_seconds

    runs = out / f"{budget}-{'killed' if kill_at else 'fresh'}"
    log = runs.with_suffix(".log")
    seconds = budget_seconds(budget)
    args = ["--set", f"data.root={data}", f"train.budget={budget}", f"output_dir={runs}"]
    wall = _train(args, log, kill_after=seconds * kill_at if kill_at else None)
    run = (runs / "latest").resolve()
    killed_epochs = _epochs(run) if kill_at else None
    if kill_at:
        wall += _train(["--resume", str(run)], log)
    return {"budget": budget, "seconds": seconds, "kind": f"killed at {kill_at:.0%}, resumed" if kill_at else "fresh",
            "epochs": _epochs(run), "killed_epochs": killed_epochs, "wall": wall, "run": run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", nargs="+", default=["5m", "15m", "30m"])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "demo")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the runs and their logs")
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction of the budget")
    parser.add_argument("--runs", nargs="+", choices=["fresh", "killed"], default=["fresh", "killed"],
                        help="which kinds of run to measure (default both)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if any((args.out / f"{b}-{kind}").exists() for b in args.budgets for kind in args.runs):
        sys.exit(f"{args.out}: holds runs of these budgets already; choose another --out")
    print("| budget | run | epochs | wall (s) | wall / budget |\n|---|---|---|---|---|", flush=True)
    for budget in args.budgets:
        for kill_at in [None if kind == "fresh" else args.kill_at for kind in args.runs]:
            row = measure(args.data.resolve(), budget, args.out, kill_at)
            killed = f" ({row['killed_epochs']} before the kill)" if kill_at else ""
            print(f"| {budget} | {row['kind']} | {row['epochs']}{killed} | {row['wall']:.0f} | "
                  f"{row['wall'] / row['seconds']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
