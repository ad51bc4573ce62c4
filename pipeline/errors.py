"""The one exception type for user mistakes.

Library code raises ``UserError`` with a message that names the file or key and
says what to do; the command-line entry points print it as one line on stderr
and exit with status 2 (see ``exit_on_user_error``).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input (file, key, value), not a bug."""


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line ``main``: a UserError or Ctrl-C becomes one line and exit status 2 / 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper


def setup_logging(verbose: bool = False, main_rank: bool = True) -> None:
    """Library modules log through ``logging``; the scripts show INFO and above (MONAI's warnings and
    above), and torchrun ranks other than 0 their warnings only."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")
    logging.getLogger("monai").setLevel(logging.WARNING)
    # MONAI's LoadImage tries a GPU DICOM decoder whenever pydicom is installed; our reader reads DICOM
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    if not main_rank:
        logging.getLogger().setLevel(logging.WARNING)
