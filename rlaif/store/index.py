"""A judgment file with an index: `judgments.jsonl` plus `judgments.index.sqlite` beside it.

The JSONL file stays the record (appended one batch at a time, flushed and fsynced); the SQLite index maps
each key to the byte offset of its latest line and whether that judgment is final, so a run of a million
pairs resumes and deduplicates without holding judgments in memory. The index is written after the lines it
points at and remembers how many bytes of the file it covers: on open it indexes whatever a killed run
appended after that (and rebuilds itself if the file is not the one it indexed). Deleting the index is safe.

`SeenSet` is the same idea for one pass over an input: ids and keys already met, on disk, not in a dict.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pydantic_core import from_json

from rlaif.records import TIE_PREFIX, Judgment

__all__ = ["JudgmentIndex", "SeenSet", "judgment_line", "is_final"]

_STEP = 500  # keys per IN (...) query


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _STEP):
        yield items[start : start + _STEP]


def is_final(data: dict) -> bool:
    """Judgment.final, read from a parsed line: labeled, or a tie."""
    reason = data.get("reason")
    if data.get("p_first") is not None:
        return reason is None
    return (reason or "").startswith(TIE_PREFIX)


_PROMPTS = {"per_principle": {"__all__": {"orders": {"__all__": {"messages"}}}}}
_NO_PROMPTS: dict = {**_PROMPTS, "members": {"__all__": _PROMPTS}}


def judgment_line(judgment: Judgment, keep_prompt: bool) -> str:
    """One compact JSON line: fields at their defaults are left out, and the rendered judge prompts too unless
    `keep_prompt` (they are reproducible from the template version and the pair)."""
    return judgment.model_dump_json(exclude_defaults=True, exclude=None if keep_prompt else _NO_PROMPTS) + "\n"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA temp_store=FILE")
    return db


class JudgmentIndex:
    """Append judgments to a JSONL file and find the latest one per key again by offset."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.index_path = self.path.with_name(self.path.stem + ".index.sqlite")
        self.db = _connect(self.index_path)
        self.db.execute("CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, offset INTEGER NOT NULL, "
                        "final INTEGER NOT NULL) WITHOUT ROWID")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID")
        self._reader: BinaryIO | None = None
        self._first_line = ""
        self._catch_up()

    # -- keeping the index in step with the file ---------------------------------------------------------
    def _meta(self, name: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _head(self) -> str:
        """The first line's bytes identify the file (a replaced file gets the index rebuilt); read once it has one
        (appends never change it)."""
        if self._first_line:
            return self._first_line
        if not self.path.is_file():
            return ""
        with self.path.open("rb") as fh:
            head = fh.readline(4096).decode("utf-8", "replace")
        if head.endswith("\n"):
            self._first_line = head
        return head

    def _catch_up(self) -> None:
        size = self.path.stat().st_size if self.path.is_file() else 0
        covered = int(self._meta("indexed_bytes", 0))
        if covered > size or (covered and self._meta("head") != self._head()):
            covered = 0  # not the file this index was built from
        if covered == 0:
            self.db.execute("DELETE FROM labels")
        if covered == size:
            return
        rows = []
        with self.path.open("rb") as fh:
            fh.seek(covered)
            offset = covered
            for raw in fh:
                if raw.endswith(b"\n"):
                    try:
                        data = from_json(raw)  # pydantic's Rust parser: ~4x json.loads on these lines
                        rows.append((data["key"], offset, int(is_final(data))))
                    except (ValueError, KeyError, TypeError):
                        pass  # a torn line from a killed run, ended by the next append
                offset += len(raw)
        self._commit(rows, size)

    def _commit(self, rows: list[tuple[str, int, int]], indexed_bytes: int) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?)", rows)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('indexed_bytes', ?)", (indexed_bytes,))
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('head', ?)", (self._head(),))
        self.db.execute("COMMIT")

    # -- writing and reading ------------------------------------------------------------------------------
    def append(self, lines: Sequence[tuple[str, bool, str]]) -> None:
        """Append (key, final, json line) records: the file first (fsynced), then the index."""
        if not lines:
            return
        rows = []
        with self.path.open("ab") as fh:
            offset = fh.tell()
            if offset:
                with self.path.open("rb") as check:  # a killed run may have left a torn last line: end it
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        fh.write(b"\n")
                        offset += 1
            for key, final, line in lines:
                data = line.encode("utf-8")
                fh.write(data)
                rows.append((key, offset, int(final)))
                offset += len(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._commit(rows, offset)

    def add_better(self, lines: Sequence[tuple[str, bool, str]], retried_after: int = 0) -> list[tuple[str, bool, str]]:
        """Append only the (key, final, line) records that improve the index, and return them: a key not seen
        yet, or one whose judgment here is not final and the new one is final, or was written before byte
        `retried_after` (an unlabeled pair of an earlier run, tried again). Within `lines` a final record wins
        over an unlabeled one of the same key. For judgments made elsewhere (shards, Ray actors)."""
        best: dict[str, tuple[str, bool, str]] = {}
        for record in lines:
            if record[0] not in best or (record[1] and not best[record[0]][1]):
                best[record[0]] = record
        known = self.lookup(list(best))
        new = []
        for key, record in best.items():
            offset, final = known.get(key, (-1, False))
            if offset < 0 or (not final and (record[1] or offset < retried_after)):
                new.append(record)
        self.append(new)
        return new

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[int, bool]]:
        """key -> (offset, final) for the keys that have a judgment."""
        found: dict[str, tuple[int, bool]] = {}
        for part in _chunks(list(dict.fromkeys(keys))):
            query = f"SELECT key, offset, final FROM labels WHERE key IN ({','.join('?' * len(part))})"
            found.update((k, (o, bool(f))) for k, o, f in self.db.execute(query, part))
        return found

    def read(self, offset: int) -> Judgment:
        if self._reader is None:
            self._reader = self.path.open("rb")
        reader = self._reader
        reader.seek(offset)
        return Judgment.model_validate_json(reader.readline())

    def final_keys(self) -> Iterator[str]:
        """Every key whose latest judgment is final (labeled or a tie)."""
        for (key,) in self.db.execute("SELECT key FROM labels WHERE final = 1"):
            yield key

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.db.close()

    def __enter__(self) -> JudgmentIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SeenSet:
    """Strings already met in one pass (ids, keys), with a number each (e.g. the line), kept in a temporary
    SQLite table so a million of them cost disk, not memory."""

    def __init__(self, folder: str | Path, name: str):
        self.path = Path(folder) / f".{name}.seen.sqlite"
        self.path.unlink(missing_ok=True)
        self.db = _connect(self.path)
        self.db.execute("CREATE TABLE seen (item TEXT PRIMARY KEY, number INTEGER) WITHOUT ROWID")

    def first_seen(self, items: Iterable[tuple[str, int]]) -> dict[str, int]:
        """Record these (item, number) pairs; returns, for each item met before (earlier in this pass or
        earlier in the same call), the number it was first met with."""
        items = list(items)
        earlier: dict[str, int] = {}
        for part in _chunks([i for i, _ in items]):
            query = f"SELECT item, number FROM seen WHERE item IN ({','.join('?' * len(part))})"
            earlier.update(self.db.execute(query, part))
        repeats: dict[str, int] = {}
        new: dict[str, int] = {}
        for item, number in items:
            first = earlier.get(item, new.get(item))
            if first is None:
                new[item] = number
            else:
                repeats.setdefault(item, first)
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO seen VALUES (?, ?)", new.items())
        self.db.execute("COMMIT")
        return repeats

    def close(self) -> None:
        self.db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    def __enter__(self) -> SeenSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
