"""The run folder: the only place stages' records touch the disk.

JSONL files are appended one finished batch at a time (flushed and fsynced), so a killed run loses at
most the batch in flight, and a rerun reads back what is already there.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from rlaif.errors import InputError

__all__ = [
    "RunFolder", "RowError", "check_row", "iter_jsonl", "duplicate_id", "read_rows", "require_usable", "Resumed",
    "resume_in_batches", "json_text", "json_line", "describe_errors", "open_text", "not_utf8", "shown",
]

T = TypeVar("T", bound=BaseModel)


class RowError(BaseModel):
    """An input row that could not be used, and why."""

    file: str
    line: int
    error: str
    raw: str


def _as_dict(record: BaseModel | dict) -> dict:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else record


def json_text(data: Any) -> str:
    """JSON text (UTF-8, not escaped to ASCII; infinities as JSON's usual -Infinity), encoded by pydantic's Rust
    encoder: several times faster than `json.dumps` on the rows a bulk run writes."""
    return to_json(data, inf_nan_mode="constants").decode()


def json_line(data: Any) -> str:
    """`json_text` as one line of a JSONL file."""
    return json_text(data) + "\n"


def describe_errors(exc: ValidationError) -> str:
    """Every problem of a failed validation, one `field: message` each, for a row error or a request line's reason."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg'].replace('Value error, ', '')}" for e in exc.errors()
    )


_UNDECODED = re.compile("[\udc80-\udcff]")  # where open_text kept a byte that is not UTF-8


def open_text(path: Path):
    """A user's text file, opened so that a byte that is not UTF-8 does not stop the reading: it is kept as a
    lone surrogate (errors="surrogateescape"), and `not_utf8` finds it in the row that holds it."""
    return Path(path).open(encoding="utf-8", errors="surrogateescape")


def not_utf8(text: str) -> str | None:
    """Why a line read by open_text cannot be used (a byte that is not UTF-8, and where), or None."""
    found = None if text.isascii() else _UNDECODED.search(text)  # isascii: ~10x cheaper, and most lines are
    if found is None:
        return None
    return f"not valid UTF-8 (byte 0x{ord(found.group()) - 0xDC00:02x} at character {found.start() + 1})"


def shown(text: str) -> str:
    """A line read by open_text, printable and writable as UTF-8: a byte that is not UTF-8 becomes `\\xff`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_row(data: Any, model: type[T], file: str, number: int, raw: str) -> T | RowError:
    """One input row (parsed JSON or a table row) as a record, or a RowError saying why it cannot be used."""
    if not isinstance(data, dict):
        return RowError(file=file, line=number, error=f"expected a JSON object, got {type(data).__name__}", raw=raw[:500])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return RowError(file=file, line=number, error=describe_errors(exc), raw=raw[:500])


def iter_jsonl(path: Path, model: type[T]) -> Iterator[tuple[int, T | RowError]]:
    """(line number, record) of a JSONL file, one line at a time (lazily); unusable lines come as RowErrors (a line
    that is not valid UTF-8 among them)."""
    path = Path(path)
    try:
        fh = open_text(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    with fh:
        for number, text in enumerate(fh, start=1):
            line = text.rstrip("\r\n")
            if not line.strip():
                continue
            undecodable = not_utf8(line)
            if undecodable:
                yield number, RowError(file=str(path), line=number, error=undecodable, raw=shown(line)[:500])
                continue
            try:
                yield number, model.model_validate_json(line)  # the usual case, parsed and checked in one go
                continue
            except ValidationError:
                pass  # read it again the slow way, for an error that says what is wrong
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, RowError(file=str(path), line=number, error=f"not valid JSON: {exc.msg}", raw=line[:500])
                continue
            yield number, check_row(data, model, str(path), number, line)


def duplicate_id(record: BaseModel, file: str, number: int, first: int) -> RowError:
    """The error of a row whose id an earlier row (at `first`) already used."""
    return RowError(file=file, line=number, raw=record.model_dump_json()[:500],
                    error=f"duplicate id {getattr(record, 'id', None)!r} (first used on line {first}); ids must be unique")


def read_rows(path: Path, model: type[T]) -> tuple[list[T], list[RowError]]:
    """Read a JSONL file into records; each unusable line becomes a RowError, the rest are kept."""
    path = Path(path)
    records, errors = [], []
    first_line: dict[str, int] = {}
    for number, record in iter_jsonl(path, model):
        if isinstance(record, RowError):
            errors.append(record)
            continue
        ident = getattr(record, "id", None)
        if ident is not None and ident in first_line:
            errors.append(duplicate_id(record, str(path), number, first_line[ident]))
            continue
        if ident is not None:
            first_line[ident] = number
        records.append(record)
    return records, errors


def require_usable(path: Path, rows: list, invalid: list[RowError], expected: str) -> None:
    """An input with no usable row at all is an error (rows that are only partly bad are skipped and named);
    `expected` says what rows the reader takes."""
    if not rows:
        first = f"; first: line {invalid[0].line}: {invalid[0].error}" if invalid else ""
        raise InputError(f"{path} has no usable row ({len(invalid)} invalid{first}); {expected}")


class JsonlWriter:
    """Records written as they come to `path.tmp`; `close()` moves the file into place (a killed run leaves the
    previous file, never half of one)."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.count = 0
        self._fh = self.tmp.open("w", encoding="utf-8")

    def write(self, records: Iterable[BaseModel | dict]) -> None:
        for record in records:
            self._fh.write(json_line(_as_dict(record)))
            self.count += 1

    def close(self) -> int:
        if not self._fh.closed:
            self._fh.close()
            self.tmp.replace(self.path)
        return self.count


class RunFolder:
    """A folder of JSONL/JSON files for one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def append(self, name: str, records: Iterable[BaseModel | dict]) -> int:
        lines = [json.dumps(_as_dict(r), ensure_ascii=False) + "\n" for r in records]
        if not lines:
            return 0
        path = self.file(name)
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as fh:  # a run killed mid-write leaves a torn last line: end it first
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    lines.insert(0, "\n")
        with path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
        return len(lines)

    def write_jsonl(self, name: str, records: Iterable[BaseModel | dict]) -> int:
        tmp = self.file(name + ".tmp")
        tmp.unlink(missing_ok=True)
        with tmp.open("w", encoding="utf-8") as fh:
            count = 0
            for record in records:
                fh.write(json.dumps(_as_dict(record), ensure_ascii=False) + "\n")
                count += 1
        tmp.replace(self.file(name))
        return count

    def open_jsonl(self, name: str) -> JsonlWriter:
        """A JSONL file written a batch at a time under a temporary name, moved into place by `close()`."""
        return JsonlWriter(self.file(name))

    def read(self, name: str, model: type[T]) -> list[T]:
        """Records of a file this run wrote; a torn last line (killed mid-write) is skipped."""
        path = self.file(name)
        if not path.is_file():
            return []
        records, _ = read_rows(path, model)
        return records

    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


@dataclass
class Resumed:
    """What `resume_in_batches` did: the latest record per distinct item key, and what was new or reused."""

    records: dict[str, Any]
    """Latest record per key, for every distinct item (in input order)."""
    items: dict[str, Any]
    """The distinct items by key, in input order."""
    done_now: int
    reused: int
    seconds: float
    duplicates: list[str] = field(default_factory=list)


def resume_in_batches(
    run: RunFolder, name: str, model: type[T], items: Iterable, key: Callable[[Any], str],
    finished: Callable[[Any], bool], work: Callable[[list], list], batch_size: int, progress: bool,
    desc: str, unit: str,
) -> Resumed:
    """The resumable stage loop: items whose key already has a `finished` record in `name` are reused; the
    rest go through `work` batch by batch, each finished batch appended to `name` before the next starts, so a
    killed run loses at most one batch. Items sharing a key are done once (their ids are listed as
    duplicates). The latest record per key wins."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    done: dict[str, Any] = {r.key: r for r in run.read(name, model)}  # type: ignore[attr-defined]
    unique: dict[str, Any] = {}
    duplicates = []
    for item in items:
        k = key(item)
        if k in unique:
            duplicates.append(item.id)
        else:
            unique[k] = item
    todo = [item for k, item in unique.items() if not (k in done and finished(done[k]))]
    bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        records = work(batch)
        run.append(name, records)
        done.update((r.key, r) for r in records)
        bar.update(len(batch))
    bar.close()
    return Resumed(records={k: done[k] for k in unique}, items=unique, done_now=len(todo),
                   reused=len(unique) - len(todo), seconds=time.perf_counter() - started, duplicates=duplicates)
