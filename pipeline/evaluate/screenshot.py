"""Open a ``report.html`` in headless Chromium: a screenshot, or the page as the browser built it.

    python -m pipeline.evaluate.screenshot outputs/demo-.../test/report.html --out report.png
    python -m pipeline.evaluate.screenshot report.html --sort hd95-desc --dom   # the sorted table, as HTML
    python -m pipeline.evaluate.screenshot report.html --check   # every column sorts as its values say

The test suite never needs a browser; this is the check that the page works in one (Debian: ``apt install
chromium``). ``--sort COLUMN`` opens the page with ``#sort=COLUMN``, which sorts the per-case table as a
click on that header does.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError, exit_on_user_error, setup_logging
from .report_html import case_table_rows

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """The first Chromium-family browser on PATH; UserError naming what to install otherwise."""
    for name in BROWSERS:
        if (path := shutil.which(name)) is not None:
            return path
    raise UserError(f"no Chromium-family browser found (looked for {', '.join(BROWSERS)}); "
                    "install one (Debian: apt install chromium) to open reports headless")


def _headless(page: Path, sort: str | None, *flags: str) -> subprocess.CompletedProcess:
    if not page.is_file():
        raise UserError(f"{page}: no such report; test.py writes report.html into its output folder")
    url = page.resolve().as_uri() + (f"#sort={sort}" if sort else "")
    with tempfile.TemporaryDirectory() as profile:  # a throwaway profile: nothing read from or left in $HOME
        command = [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={profile}", *flags, url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise UserError(f"{page}: the browser failed ({result.returncode}): {result.stderr.strip()[-300:]}")
    return result


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 2400, sort: str | None = None) -> Path:
    """A PNG of the top ``width`` x ``height`` pixels of ``page``."""
    _headless(page, sort, f"--window-size={width},{height}", f"--screenshot={out.resolve()}")
    if not out.is_file():
        raise UserError(f"{page}: the browser wrote no screenshot to {out}")
    return out


def rendered_dom(page: Path, sort: str | None = None) -> str:
    """The page's HTML after its scripts ran (the table in the order the browser shows it)."""
    return _headless(page, sort, "--virtual-time-budget=2000", "--dump-dom").stdout


def check_sorting(page: Path) -> list[str]:
    """Open ``page`` sorted by each column, both ways, and compare the browser's row order with the one
    the values in the page give; returns one line per column, UserError on the first wrong order."""
    lines = []
    for column in [c for c in case_table_rows(page.read_text(encoding="utf-8"))[0] if c not in ("case", "class")]:
        for descending in (False, True):
            shown = case_table_rows(rendered_dom(page, f"{column}-desc" if descending else column))
            values = [float(row[column]) for row in shown]
            if values != sorted(values, reverse=descending):
                raise UserError(f"{page}: the browser sorted {column} {'down' if descending else 'up'} as {values}")
        lines.append(f"{column}: {len(values)} rows in order both ways")
    return lines


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("--out", type=Path, help="the screenshot (default: beside the report, report.png)")
    parser.add_argument("--sort", help="open sorted by this column (dice, hd95-desc, ...)")
    parser.add_argument("--dom", action="store_true", help="print the page as the browser built it instead")
    parser.add_argument("--check", action="store_true", help="also sort by every column in the browser and check")
    parser.add_argument("--size", nargs=2, type=int, default=(1280, 2400), metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args(argv)
    setup_logging(False)
    if args.dom:
        sys.stdout.write(rendered_dom(args.report, args.sort))
        return
    if args.check:
        print("\n".join(check_sorting(args.report)))
    out = screenshot(args.report, args.out or args.report.with_suffix(".png"), *args.size, sort=args.sort)
    print(f"screenshot: {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
