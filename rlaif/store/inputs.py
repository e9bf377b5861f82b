"""Input tables read lazily, whatever their format: JSONL, Parquet (a file or a folder of them), or a
Hugging Face dataset saved with `save_to_disk`. Rows come one at a time with their number (the line of a
JSONL file, the 1-based row of a table), so an input of any size is read in constant memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from rlaif.errors import InputError
from rlaif.store.datasets import saved_batches
from rlaif.store.runfolder import RowError, check_row, iter_jsonl

__all__ = ["input_format", "iter_input", "count_rows", "FORMATS"]

T = TypeVar("T", bound=BaseModel)

FORMATS = "JSONL (.jsonl/.json), Parquet (a .parquet file or a folder of them), or a `save_to_disk` dataset folder"
_BATCH = 2048


def input_format(path: str | Path) -> str:
    """'saved' (a save_to_disk folder), 'parquet' (a file or a folder of .parquet files) or 'jsonl'."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"cannot read {path}: it does not exist (expected {FORMATS})")
    if path.is_dir():
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return "saved"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise InputError(f"{path} is a folder with neither a saved dataset (state.json) nor .parquet files; "
                         f"expected {FORMATS}")
    return "parquet" if path.suffix == ".parquet" else "jsonl"


def _table_rows(path: Path, model: type[T], batches: Iterator) -> Iterator[tuple[int, T | RowError]]:
    number = 0
    for batch in batches:
        for data in batch.to_pylist():
            number += 1
            row = check_row(data, model, str(path), number, "")
            if isinstance(row, RowError):  # the row as text, only for the rows that need it
                row = row.model_copy(update={"raw": json.dumps(data, ensure_ascii=False, default=str)[:500]})
            yield number, row


def _parquet_batches(path: Path) -> Iterator:
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        try:
            yield from pq.ParquetFile(file).iter_batches(batch_size=_BATCH)
        except OSError as exc:
            raise InputError(f"cannot read {file} as Parquet: {exc}") from exc


def iter_input(path: str | Path, model: type[T]) -> Iterator[tuple[int, T | RowError]]:
    """(row number, record or RowError) for every row of the input, lazily; ids are not checked here."""
    path = Path(path)
    kind = input_format(path)
    if kind == "jsonl":
        return iter_jsonl(path, model)
    return _table_rows(path, model, _parquet_batches(path) if kind == "parquet" else saved_batches(path))


def count_rows(path: str | Path) -> int:
    """Rows in the input, cheaply (lines of a JSONL file, table metadata otherwise): for progress bars."""
    path = Path(path)
    kind = input_format(path)
    if kind == "jsonl":
        lines, last = 0, b"\n"
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")
    if kind == "parquet":
        import pyarrow.parquet as pq

        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    from datasets import load_from_disk

    return len(load_from_disk(str(path)))
