"""Evaluation outputs: ``metrics.csv``, ``summary.json``, ``report.md`` and ``report.html``."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..files import write_text
from .report_html import write_html

CSV_FIRST = ("case", "class", "name")
PER_CASE = ("dice", "nsd", "cldice", "jaccard", "asd", "hd95")  # the per-case table of report.md, when computed


def _fmt(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_metrics_csv(rows: Sequence[dict], path: Path) -> None:
    """One row per case and class; infinite distances written as ``inf``; a metric a class does not have
    (clDice of a class that is not tubular) is left empty."""
    columns = list(CSV_FIRST) + [k for k in dict.fromkeys(k for row in rows for k in row) if k not in CSV_FIRST]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in sorted(rows, key=lambda r: (str(r["case"]), int(r["class"]))):
        writer.writerow([_fmt(row.get(c, "")) for c in columns])
    write_text(path, buffer.getvalue())


def read_metrics_csv(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv`` with numbers parsed back (``inf`` included); empty cells are left out."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{key: value if key in ("case", "name") else int(value) if key == "class" else float(value)
             for key, value in row.items() if value != ""} for row in rows]


def _md_value(stat: dict) -> str:
    if stat["mean"] is None:
        return f"— ({stat['n_nonfinite']} not finite)"
    text = f"{stat['mean']:.4f} ± {stat['std']:.4f} (median {stat['median']:.4f})"
    return text + (f", {stat['n_nonfinite']} not finite" if stat["n_nonfinite"] else "")


def render_markdown(summary: dict, rows: Sequence[dict], images: Mapping[str, str] | None = None,
                    title: str = "Evaluation") -> str:
    """The summary as tables, per-case Dice, and links to slice images."""
    mean = "n/a" if summary["mean_dice"] is None else f"{summary['mean_dice']:.4f}"
    lines = [f"# {title}", ""]
    if "scored_note" in summary:
        lines += [f"**Scored: {summary['scored_note']}.**", ""]
    lines += [f"Cases: {summary['n_cases']}. Mean foreground Dice: {mean}.", ""]
    lines += ["Distances in mm (voxels when the files carry no spacing). Mean ± std (median) over cases "
              "where the value is finite; cases where a structure is missing from the prediction or the "
              "reference have infinite distances and are counted as not finite.", ""]
    for label_id, cls in summary["classes"].items():
        lines += [f"## Class {label_id}: {cls['name']}", ""]
        if cls.get("n_absent"):
            lines += [f"Absent from both prediction and reference in {cls['n_absent']} case(s): not counted below.", ""]
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {name} | {_md_value(stat)} |" for name, stat in cls["metrics"].items()]
        lines.append("")
    shown = [m for m in PER_CASE if any(m in row for row in rows)]
    lines += ["## Per case", "", "| case | class | " + " | ".join(shown) + " |",
              "| --- | --- |" + " ---: |" * len(shown)]
    for row in sorted(rows, key=lambda r: (str(r["case"]), int(r["class"]))):
        cells = [_fmt(row[m]) if m in row else "" for m in shown]
        lines.append(f"| {row['case']} | {row['name']} | " + " | ".join(cells) + " |")
    if images:
        lines += ["", "## Slices", "", "Sagittal, coronal and axial planes: image, label, prediction.", ""]
        for case, rel in sorted(images.items()):
            lines += [f"### {case}", "", f"![{case}]({rel})", ""]
    return "\n".join(lines) + "\n"


def write_case_rows(out_dir: Path, case: str, rows: Sequence[dict]) -> None:
    """``cases/<case>.json``, written last for a case: its presence marks the case complete."""
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "cases" / f"{case}.json", json.dumps(list(rows)))


def read_case_rows(out_dir: Path) -> dict[str, list[dict]]:
    """Rows of every completed case of an earlier (possibly killed) run into ``out_dir``."""
    folder = out_dir / "cases"
    if not folder.is_dir():
        return {}
    done = {}
    for path in sorted(folder.glob("*.json")):
        try:
            done[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # not complete: the case runs again
    return done


def write_reports(rows: Sequence[dict], summary: dict, out_dir: Path, images: Mapping[str, str] | None = None,
                  title: str = "Evaluation", loss_curve: Path | None = None) -> None:
    """Write ``metrics.csv``, ``summary.json``, ``report.md`` and ``report.html`` (rows and their
    ``summarize``; ``images`` relative to ``out_dir``; ``loss_curve``, the run's ``loss.png``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(rows, out_dir / "metrics.csv")
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text(out_dir / "report.md", render_markdown(summary, rows, images, title))
    write_html(summary, rows, out_dir, images, title, loss_curve)
