"""The folds of a cross-validation run folder (``train.py --set data.folds=K``): ``FOLDS_FILE`` in the
parent folder lists them; ``test.py --run PARENT`` averages their networks (``Predictor.from_folds``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

FOLDS_FILE = "folds.json"


def fold_dirs(run_dir: Path) -> list[Path] | None:
    """The fold run folders of ``run_dir`` (None: a single run); UserError when a fold has not finished."""
    path = Path(run_dir) / FOLDS_FILE
    if not path.is_file():
        return None
    folds = [Path(run_dir) / name for name in json.loads(path.read_text(encoding="utf-8"))["folds"]]
    unfinished = [f.name for f in folds if not (f / "checkpoints" / "last.pt").is_file()]
    if unfinished:
        raise UserError(f"{run_dir}: fold(s) {', '.join(unfinished)} not trained yet; finish them with "
                        f"python train.py --resume {run_dir}")
    return folds
