"""Stopping cleanly on SIGTERM / Ctrl-C: the loop finishes its step and saves a resumable checkpoint."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a resumable checkpoint."""


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """Yield a callable that turns true once SIGTERM or SIGINT arrives (main thread only)."""
    requested = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        requested.append(signum)
        log.warning("%s received: saving after the current step", signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
