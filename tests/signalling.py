"""Signals for the kill-and-resume tests: a training process signalled once its log holds some epochs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli


def logged(run: Path, epochs: int) -> bool:
    """Whether ``run/log.csv`` holds more than ``epochs`` epochs."""
    log = run / "log.csv"
    return log.exists() and len(log.read_text(encoding="utf-8").splitlines()) > epochs


def start_and_signal(args: list[str], run: Path, sig: int, after_epoch: int, delay: float) -> subprocess.Popen:
    """``python ARGS`` sent ``sig`` ``delay`` s after ``run/log.csv`` holds ``after_epoch`` epochs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
    deadline = time.time() + 120
    while time.time() < deadline:
        if logged(run, after_epoch):
            break
        if proc.poll() is not None:
            pytest.fail(f"training ended before the signal: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def run_and_sigterm(args: list[str], run: Path, after_epoch: int) -> subprocess.CompletedProcess:
    """``python ARGS`` in this process, sent SIGTERM once ``run/log.csv`` holds ``after_epoch`` epochs (by a
    watching thread; the training loop's own handler takes it). A signal that came after the run ended would
    meet the no-op handler installed here, never pytest's default (the end of the suite)."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            if logged(run, after_epoch):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return run_cli(*args)
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGTERM, previous)
