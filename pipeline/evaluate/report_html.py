"""``report.html``: the evaluation as one self-contained page (images embedded as data URIs, no network
needed): what was scored, the summary per class, a per-case table sortable by any column, the loss
curve of the run and the slice images of every case.

Written by hand because no maintained library here renders such a page; it is plain HTML with a few
lines of script for sorting, so it opens in any browser and can be sent on as one file.
"""

from __future__ import annotations

import base64
import html
import html.parser
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..files import write_text

COLUMNS = ("dice", "nsd", "cldice", "jaccard", "asd", "assd", "hd95", "hd", "precision", "sensitivity")
LOWER_IS_BETTER = ("asd", "assd", "hd95", "hd")

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.scored { background: #fff6d6; border-left: 4px solid #e0b000; padding: .5em 1em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
table.sortable th { cursor: pointer; background: #f4f4f4; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
"""

# Click a header to sort by it (numbers as numbers, infinity last); click again to reverse. A link ending in
# #sort=hd95 (or #sort=hd95-desc) opens the page sorted by that column.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var cell = row.cells[column], v = cell.dataset.value;
        return v === undefined ? cell.textContent : Number(v);
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), order = (x > y) - (x < y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
(function () {
  var wanted = /^#sort=([a-z0-9_]+)(-desc)?$/.exec(location.hash);
  if (!wanted) return;
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    if (th.dataset.column === wanted[1]) { th.click(); if (wanted[2]) th.click(); }
  });
})();
"""


def data_uri(path: Path) -> str | None:
    """A PNG as a ``data:`` URI (None when the file is missing)."""
    try:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


def _number(value) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else "nan" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _cell(value) -> str:
    """A numeric cell sorts by its value; infinite, not-a-number and missing values sort as infinity."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f'<td data-value="{value!r}">{_number(value)}</td>'
    return f'<td data-value="Infinity">{"" if value is None else _number(value)}</td>'


def summary_section(summary: dict) -> list[str]:
    """One table per class: each metric's mean ± std, median and how many cases were finite."""
    parts = []
    for label_id, cls in summary["classes"].items():
        parts.append(f"<h3>Class {html.escape(str(label_id))}: {html.escape(cls['name'])}</h3>")
        if cls.get("n_absent"):
            parts.append(f"<p>Absent from prediction and reference in {cls['n_absent']} case(s): not counted.</p>")
        parts.append("<table><thead><tr><th>metric</th><th>mean</th><th>std</th><th>median</th><th>cases</th>"
                     "<th>not finite</th></tr></thead><tbody>")
        for name, stat in cls["metrics"].items():
            values = [_number(stat.get(k)) if stat.get(k) is not None else "—" for k in ("mean", "std", "median")]
            parts.append(f"<tr><td>{html.escape(name)}</td><td>" + "</td><td>".join(values)
                         + f"</td><td>{stat.get('n', '')}</td><td>{stat.get('n_nonfinite', 0)}</td></tr>")
        parts.append("</tbody></table>")
    return parts


def case_table(rows: Sequence[dict]) -> list[str]:
    """Every case and class with every metric computed, sortable by any column."""
    shown = [m for m in COLUMNS if any(m in row for row in rows)]
    header = "".join(f'<th data-column="{m}">{m}{" (lower is better)" if m in LOWER_IS_BETTER else ""}</th>'
                     for m in shown)
    parts = ['<table class="sortable" id="cases"><thead><tr><th data-column="case">case</th>'
             '<th data-column="class">class</th>' + header
             + "</tr></thead><tbody>"]
    for row in sorted(rows, key=lambda r: (str(r["case"]), int(r["class"]))):
        cells = "".join(_cell(row.get(m)) for m in shown)
        parts.append(f'<tr><td class="text">{html.escape(str(row["case"]))}</td>'
                     f'<td class="text">{html.escape(str(row.get("name", row["class"])))}</td>{cells}</tr>')
    parts.append("</tbody></table>")
    return parts


def _figure(caption: str, path: Path) -> list[str]:
    uri = data_uri(path)
    if uri is None:
        return []
    return [f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>"]


def render_html(summary: dict, rows: Sequence[dict], out_dir: Path, images: Mapping[str, str] | None = None,
                title: str = "Evaluation", loss_curve: Path | None = None) -> str:
    """The page; ``images`` are slice images relative to ``out_dir``, ``loss_curve`` the run's ``loss.png``."""
    mean = "n/a" if summary["mean_dice"] is None else f"{summary['mean_dice']:.4f}"
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if "scored_note" in summary:
        parts.append(f'<p class="scored"><b>Scored:</b> {html.escape(summary["scored_note"])}.</p>')
    parts.append(f"<p>Cases: {summary['n_cases']}. Mean foreground Dice: <b>{mean}</b>. Distances in mm "
                 "(voxels when the files carry no spacing); a structure missing from prediction or reference "
                 "gives an infinite distance, counted as not finite.</p>")
    parts += ["<h2>Summary</h2>", *summary_section(summary)]
    parts += ["<h2>Per case</h2><p>Click a column to sort by it.</p>", *case_table(rows)]
    if loss_curve is not None:
        parts += ["<h2>Training</h2>", *_figure("loss and validation Dice per epoch", loss_curve)]
    if images:
        parts.append("<h2>Slices</h2><p>Sagittal, coronal and axial planes: image, label, prediction.</p>")
        for case, rel in sorted(images.items()):
            parts += [f"<h3 id=\"case-{html.escape(case)}\">{html.escape(case)}</h3>", *_figure(case, out_dir / rel)]
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_html(summary: dict, rows: Sequence[dict], out_dir: Path, images: Mapping[str, str] | None = None,
               title: str = "Evaluation", loss_curve: Path | None = None) -> Path:
    """``out_dir/report.html``; returns its path."""
    path = out_dir / "report.html"
    write_text(path, render_html(summary, rows, out_dir, images, title, loss_curve))
    return path


class _CaseTable(html.parser.HTMLParser):
    """The per-case table of a page: its columns and, per row, each cell's sort value (text without one)."""

    def __init__(self):
        super().__init__()
        self.columns, self.rows, self._inside, self._cell = [], [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._inside = attrs.get("id") == "cases"
        elif self._inside and tag == "th":
            self.columns.append(attrs.get("data-column"))
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag == "td":
            self._cell = [attrs.get("data-value"), ""]
            self.rows[-1].append(self._cell)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._inside = False


def case_table_rows(page: str) -> list[dict[str, str]]:
    """The per-case table of ``page`` in its order: per row, column -> sort value (numbers; ``Infinity``
    for missing and infinite ones) or text (case and class)."""
    parser = _CaseTable()
    parser.feed(page)
    return [{column: value if value is not None else text for column, (value, text) in zip(parser.columns, row)}
            for row in parser.rows if row]
