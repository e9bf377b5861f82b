"""Quiet by default: the engines' own log lines go to `rlaif.log` in the run folder, not the terminal.

vLLM, torch and transformers log through Python's `logging` and `warnings`, and the engine's native code
(OpenMP, NUMA binding, tcmalloc) writes straight to file descriptor 2. By default all of that goes to the log
file, while rlaif's progress bars, warnings and summary keep the terminal (Python's `sys.stderr` is moved to
a copy of the original descriptor first). `--verbose` leaves everything on the terminal. Everything is put
back when the command ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["engine_logs", "LOG_FILE"]

LOG_FILE = "rlaif.log"


@contextlib.contextmanager
def engine_logs(folder: Path | None, verbose: bool) -> Iterator[Path | None]:
    """Within the block, the engines' log lines go to `folder/rlaif.log` (yielded), or stay on the terminal
    with `verbose` or without a folder (None)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    if verbose or folder is None:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        path = None
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOG_FILE
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers, root.level = [handler], logging.INFO
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings(), _native_stderr(path):
            warnings.simplefilter("default")
            yield path
    finally:
        logging.captureWarnings(False)
        handler.close()
        root.handlers, root.level = saved


@contextlib.contextmanager
def _native_stderr(path: Path | None) -> Iterator[None]:
    """Point descriptor 2 at the log file; Python's own stderr keeps writing to the terminal."""
    redirected = sys.stderr is not sys.__stderr__  # e.g. captured by a test runner: leave descriptor 2 alone
    if path is None or redirected:
        yield
        return
    python_stderr: TextIO = sys.stderr
    try:
        python_stderr.flush()
        saved_fd = os.dup(2)
        terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no real descriptor 2: the logging route alone
        yield
        return
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stderr = terminal
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield
    finally:
        terminal.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        sys.stderr = python_stderr
        terminal.close()
