"""report.html: one self-contained page with every number of metrics.csv, sortable keys, and the images
embedded byte for byte (no browser needed here; `python -m pipeline.evaluate.screenshot` opens it in one)."""

from __future__ import annotations

import base64
import json
import math
import re

from pipeline.evaluate.report import read_case_rows, read_metrics_csv
from pipeline.evaluate.report_html import case_table_rows, render_html


def _links(text: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', text)


def test_the_test_report_page_holds_every_row_the_slices_and_the_loss_curve(trained):
    run, _ = trained
    test_dir = run / "test"
    text = (test_dir / "report.html").read_text(encoding="utf-8")
    links = _links(text)
    assert links and all(link.startswith("data:image/png;base64,") for link in links)  # nothing to fetch
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in links]
    assert embedded[0] == (run / "loss.png").read_bytes()
    assert embedded[1:] == [(test_dir / "slices" / f"{c}.png").read_bytes() for c in ("case_004", "case_005")]
    rows = read_metrics_csv(test_dir / "metrics.csv")
    table = case_table_rows(text)
    assert [(r["case"], r["class"]) for r in table] == [(r["case"], r["name"]) for r in rows]
    exact = [row for case in ("case_004", "case_005") for row in read_case_rows(test_dir)[case]]  # unrounded
    for metric in ("dice", "nsd", "jaccard", "asd", "hd95"):
        assert [float(r[metric]) for r in table] == [r[metric] for r in exact]
    summary = json.loads((test_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["scored_note"] in text and f"{summary['mean_dice']:.4f}" in text


def test_missing_and_infinite_values_sort_last_and_text_is_escaped(tmp_path):
    rows = [{"case": "a<b", "class": 1, "name": "organ", "dice": 0.5, "hd95": math.inf},
            {"case": "c", "class": 1, "name": "organ", "dice": 0.0, "hd95": 2.5},
            {"case": "d", "class": 1, "name": "organ", "dice": 0.7}]
    stat = {"mean": 0.4, "std": 0.3, "median": 0.5, "n": 3, "n_nonfinite": 0}
    summary = {"n_cases": 3, "mean_dice": 0.4, "classes": {"1": {"name": "organ", "metrics": {"dice": stat}}}}
    text = render_html(summary, rows, tmp_path, images={"missing": "slices/missing.png"})
    table = case_table_rows(text)
    assert table[0]["case"] == "a<b" and "a&lt;b" in text
    assert [r["hd95"] for r in table] == ["Infinity", "2.5", "Infinity"]  # inf and missing sort last
    assert [r["dice"] for r in table] == ["0.5", "0.0", "0.7"]
    assert "<img" not in text  # a slice image that is not there is left out, not linked
