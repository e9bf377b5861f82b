"""What every command shares: the parser class (one-line errors), common options, input reading, the
summary printer.

A user's mistake ends in one line that says what to do, and exit status 2; `--verbose` adds the traceback.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel

__all__ = [
    "Parser", "common_options", "out_folder", "out_file", "existing_file", "existing_folder", "existing_path",
    "positive_int", "positive_float", "fraction", "share", "read_input",
    "stream_input",
    "print_summary",
]

M = TypeVar("M", bound=BaseModel)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: what is wrong and where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def common_options() -> argparse.ArgumentParser:
    """--quiet and --verbose, shared by every command (a parent parser)."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--quiet", action="store_true", help="no progress bars")
    shared.add_argument("--verbose", action="store_true",
                        help="show the engines' own log lines on the terminal, and the traceback of an error")
    return shared


def out_folder(text: str) -> Path:
    """An output folder: created when missing; an existing file there is refused."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder (it is created if missing)")
    return path


def out_file(text: str) -> str:
    """An output file: an existing folder there is refused. (Kept a string: a Path `--out` is a run folder.)"""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name to write")
    return text


def existing_path(text: str) -> Path:
    """A file or folder to read: it must exist (checked before any work starts)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


def existing_file(text: str) -> Path:
    """A file to read: a missing path or a folder is refused before any work starts."""
    path = existing_path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
    return path


def existing_folder(text: str) -> Path:
    """A folder to read (a run folder, a model folder): a missing path or a plain file is refused."""
    path = existing_path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    return path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1], e.g. an interval width or a share."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def share(text: str) -> float:
    """A number in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _say_skipped(row: Any, shown: int) -> None:
    """Name the first 20 bad rows on stderr, then say that more follow (all go to invalid_rows.jsonl)."""
    if shown <= 20:
        print(f"skipping {row.file}:{row.line}: {row.error}", file=sys.stderr)
    elif shown == 21:
        print("... more bad rows follow (all are listed in invalid_rows.jsonl)", file=sys.stderr)


def read_input(path: str | Path, model: type[M], expected: str) -> tuple[list[M], list]:
    """Rows of a JSONL input file; bad rows are named on stderr and kept for invalid_rows.jsonl.

    A file with no usable row at all is an error (`expected` says what rows the command reads)."""
    from rlaif.store.runfolder import read_rows, require_usable

    rows, bad = read_rows(Path(path), model)
    for shown, row in enumerate(bad, start=1):
        _say_skipped(row, shown)
    require_usable(Path(path), rows, bad, f"this command reads {expected}")
    return rows, bad


def stream_input(path: str | Path, model: type[M], expected: str) -> tuple[Iterator, int]:
    """A lazy input (JSONL, Parquet or a saved dataset: rlaif.store.inputs) as numbered rows, and its row count.

    Rows are read up to the first usable one before anything else starts, so an input with no usable row at
    all fails at once; the first bad rows are named on stderr as they pass (all are listed in
    invalid_rows.jsonl)."""
    from rlaif.store.inputs import count_rows, iter_input
    from rlaif.store.runfolder import RowError, require_usable

    rows = iter_input(Path(path), model)
    head: list = []
    for number, row in rows:
        head.append((number, row))
        if not isinstance(row, RowError):
            break
    bad = [row for _, row in head if isinstance(row, RowError)]
    require_usable(Path(path), [row for _, row in head if not isinstance(row, RowError)], bad,
                   f"this command reads {expected}")
    shown = 0

    def announced() -> Iterator:
        nonlocal shown
        for number, row in itertools.chain(head, rows):
            if isinstance(row, RowError):
                shown += 1
                _say_skipped(row, shown)
            yield number, row

    return announced(), count_rows(path)


def print_summary(summary: dict[str, Any], title: str, files: tuple[str, ...] = ()) -> None:
    """The end-of-command summary: numbers, counts by reason, backend counters, and where the files are."""
    print(f"\n=== rlaif {title} summary ===")
    for key, value in summary.items():
        if key in ("run_dir", "backend_stats") or value is None:
            continue
        if isinstance(value, dict):
            for name, count in sorted(value.items(), key=lambda kv: -kv[1] if isinstance(kv[1], int) else 0):
                print(f"{key.replace('_', ' '):>28}: {name} ({count})")
        else:
            print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    stats = summary.get("backend_stats")
    if stats:
        retries = ", ".join(f"{k} {v}" for k, v in sorted(stats["retries"].items())) or "none"
        servers = "".join(f"; {url} answered {n}" for url, n in sorted(stats.get("servers", {}).items()))
        print(f"{'backend attempts':>28}: {stats['attempts']} (retries: {retries}; failed requests: {stats['failed']}{servers})")
        print(f"{'engine memory':>28}: {stats['engine_memory_gib']:.2f} GiB (KV cache+weights)") if stats.get("engine_memory_gib") else None
    run_dir = Path(summary["run_dir"]) if "run_dir" in summary else None
    for name in files if run_dir else ():
        kind = "  (datasets.load_from_disk)" if not Path(name).suffix else ""
        print(f"{name:>28}: {run_dir / name}{kind}")  # type: ignore[operator]
