"""The service's durable state: files, batches, audits and labeling campaigns in SQLite (WAL mode).

Only metadata lives here; what a job writes goes to its run folder under the service directory, named by the
job's id. Ids are generated here (a prefix and 24 hex digits) and checked against that shape before any
lookup, so a client-given id can never name a path outside the service directory.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["ServiceDB", "new_id", "valid_id", "ACTIVE_BATCH", "TERMINAL_BATCH", "ACTIVE_AUDIT"]

ACTIVE_BATCH = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL_BATCH = ("completed", "failed", "cancelled", "expired")
ACTIVE_AUDIT = ("queued", "running")

_PREFIX = {"file": "file-", "batch": "batch_", "audit": "audit_", "campaign": "campaign_"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, path TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
    judge TEXT NOT NULL, completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
    in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER, cancelling_at INTEGER,
    cancelled_at INTEGER, output_file_id TEXT, error_file_id TEXT, total INTEGER DEFAULT 0,
    completed INTEGER DEFAULT 0, failed INTEGER DEFAULT 0, errors TEXT, metadata TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS audits (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
    created_at INTEGER NOT NULL, finished_at INTEGER, error TEXT, result TEXT);
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, batch_id TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
    strategy TEXT NOT NULL, n INTEGER NOT NULL, seed INTEGER NOT NULL, created_at INTEGER NOT NULL,
    audit_id TEXT);
CREATE TABLE IF NOT EXISTS human_labels (
    campaign_id TEXT NOT NULL, item_id TEXT NOT NULL, annotator TEXT NOT NULL, label TEXT NOT NULL,
    created_at INTEGER NOT NULL, PRIMARY KEY (campaign_id, item_id, annotator));
"""


def new_id(kind: str) -> str:
    return _PREFIX[kind] + secrets.token_hex(12)


def valid_id(kind: str, value: str) -> bool:
    return re.fullmatch(re.escape(_PREFIX[kind]) + "[0-9a-f]{24}", value or "") is not None


def now() -> int:
    return int(time.time())


class ServiceDB:
    """One connection shared by the service's threads behind a lock (writes are small and few)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, params).fetchall()]

    def _one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _run(self, sql: str, params: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def insert(self, table: str, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        self._run(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def update(self, table: str, id: str, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._run(f"UPDATE {table} SET {sets} WHERE id = ?", (*fields.values(), id))

    def get(self, table: str, id: str, owner: str | None = None) -> dict[str, Any] | None:
        """A row by id; with `owner`, only if that owner's (anyone else gets None, as for a missing id)."""
        if owner is None:
            return self._one(f"SELECT * FROM {table} WHERE id = ?", (id,))
        return self._one(f"SELECT * FROM {table} WHERE id = ? AND owner = ?", (id, owner))

    def owned(self, table: str, owner: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        """An owner's rows, newest first; `after` pages on from that id."""
        if after:
            mark = self.get(table, after, owner)
            if mark is not None:
                return self._all(f"SELECT * FROM {table} WHERE owner = ? AND (created_at, id) < (?, ?) "
                                 "ORDER BY created_at DESC, id DESC LIMIT ?", (owner, mark["created_at"], after, limit))
        return self._all(f"SELECT * FROM {table} WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                         (owner, limit))

    def set_status(self, table: str, id: str, status: str, only_from: tuple[str, ...] = (), **fields: Any) -> bool:
        """Move a job to `status` (stamping `<status>_at` for batches); with `only_from`, only from those states."""
        stamp = {f"{status}_at": now()} if table == "batches" and status != "validating" else {}
        values = {"status": status, **stamp, **fields}
        sets = ", ".join(f"{name} = ?" for name in values)
        guard = f" AND status IN ({', '.join('?' * len(only_from))})" if only_from else ""
        return self._run(f"UPDATE {table} SET {sets} WHERE id = ?{guard}", (*values.values(), id, *only_from)) > 0

    def active_jobs(self, owner: str) -> int:
        row = self._one(
            f"SELECT (SELECT COUNT(*) FROM batches WHERE owner = ? AND status IN ({', '.join('?' * len(ACTIVE_BATCH))}))"
            f" + (SELECT COUNT(*) FROM audits WHERE owner = ? AND status IN ({', '.join('?' * len(ACTIVE_AUDIT))})) AS n",
            (owner, *ACTIVE_BATCH, owner, *ACTIVE_AUDIT))
        return int(row["n"]) if row else 0

    def unfinished(self) -> list[tuple[str, str]]:
        """(kind, id) of every job not yet in a final state, oldest first: the queue after a restart."""
        rows = self._all(
            f"SELECT 'batch' AS kind, id, created_at FROM batches WHERE status IN ({', '.join('?' * len(ACTIVE_BATCH))}) "
            f"UNION ALL SELECT 'audit', id, created_at FROM audits WHERE status IN ({', '.join('?' * len(ACTIVE_AUDIT))}) "
            "ORDER BY created_at, id", (*ACTIVE_BATCH, *ACTIVE_AUDIT))
        return [(r["kind"], r["id"]) for r in rows]

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> jobs, for /metrics."""
        rows = self._all("SELECT 'batch' AS kind, status, COUNT(*) AS n FROM batches GROUP BY status "
                         "UNION ALL SELECT 'audit', status, COUNT(*) FROM audits GROUP BY status")
        return {(r["kind"], r["status"]): r["n"] for r in rows}

    # labeling campaigns
    def campaign_by_token_hash(self, token_hash: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM campaigns WHERE token_hash = ?", (token_hash,))

    def save_label(self, campaign_id: str, item_id: str, annotator: str, label: str) -> None:
        self._run("INSERT INTO human_labels (campaign_id, item_id, annotator, label, created_at) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT (campaign_id, item_id, annotator) DO UPDATE SET label = excluded.label, "
                  "created_at = excluded.created_at", (campaign_id, item_id, annotator, label, now()))

    def labels(self, campaign_id: str) -> list[dict[str, Any]]:
        return self._all("SELECT item_id, annotator, label, created_at FROM human_labels WHERE campaign_id = ? "
                         "ORDER BY created_at, item_id", (campaign_id,))


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)
