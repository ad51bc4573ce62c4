"""Where ``test.py`` writes: a new output folder per test, and what is left of it after a refused case."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import UserError
from ..evaluate.report import read_case_rows

log = logging.getLogger(__name__)


def new_output_dir(run_dir: Path, out: str | None, resume: bool = False) -> Path:
    """``--out`` (must be new or empty) or the first free ``RUN/test``, ``RUN/test-2``, ...

    With ``resume``: the existing ``--out`` (default ``RUN/test``) of a run that was stopped.
    A folder that cannot be written (read-only run folder, another user's) is one line naming it.
    """
    try:
        return _output_dir(run_dir, out, resume)
    except PermissionError as err:
        raise UserError(f"{err.filename or run_dir}: cannot write the test results there (permission denied); "
                        "pass --out DIR to write them elsewhere") from None


def _output_dir(run_dir: Path, out: str | None, resume: bool) -> Path:
    if resume:
        path = Path(out) if out is not None else run_dir / "test"
        if not path.is_dir():
            raise UserError(f"{path}: nothing to resume (no such folder); drop --resume")
        return path
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{path}: output folder exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        return path
    for n in range(1, 1000):
        path = run_dir / ("test" if n == 1 else f"test-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise UserError(f"{run_dir}: too many test folders; pass --out")


def discard_unfinished(out_dir: Path, created: bool) -> None:
    """After a refused case: an output folder without a finished case is removed (emptied when the user
    made it); one with finished cases is kept for ``--resume``."""
    finished = len(read_case_rows(out_dir))
    if finished:
        log.warning("%s: kept %d finished case(s); fix the case named below, then run test.py again with "
                    "--resume --out %s", out_dir, finished, out_dir)
    elif created:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        for path in out_dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
