"""The job store's two databases behind one small interface: SQLite (WAL mode) on one host, PostgreSQL across hosts.

    open_database("runs/service/service.sqlite")           # the embedded default: workers on one host share it
    open_database("postgresql://user:pw@db-host/rlaif")    # workers on several hosts (psycopg 3)

SQL is written once, with `?` placeholders and types both databases accept; each process holds one connection
(used by its threads in turn), and `transaction()` groups statements that must land together.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError

__all__ = ["Database", "open_database", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA_VERSION = 2
"""1: the single-process store of rlaif 0.1 (no tasks); 2: leasable tasks, several workers."""

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
        bytes BIGINT NOT NULL, created_at BIGINT NOT NULL, path TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
        judge TEXT NOT NULL, completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL, in_progress_at BIGINT, finalizing_at BIGINT, completed_at BIGINT, failed_at BIGINT,
        expired_at BIGINT, cancelling_at BIGINT, cancelled_at BIGINT, stop_reason TEXT, output_file_id TEXT,
        error_file_id TEXT, total BIGINT DEFAULT 0, completed BIGINT DEFAULT 0, failed BIGINT DEFAULT 0,
        chunks BIGINT DEFAULT 0, errors TEXT, metadata TEXT, summary TEXT)""",
    """CREATE TABLE IF NOT EXISTS audits (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
        created_at BIGINT NOT NULL, finished_at BIGINT, error TEXT, result TEXT)""",
    """CREATE TABLE IF NOT EXISTS campaigns (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, batch_id TEXT NOT NULL, strategy TEXT NOT NULL, n BIGINT NOT NULL,
        seed BIGINT NOT NULL, created_at BIGINT NOT NULL, audit_id TEXT)""",
    """CREATE TABLE IF NOT EXISTS campaign_links (
        token_hash TEXT PRIMARY KEY, campaign_id TEXT NOT NULL, annotator TEXT NOT NULL,
        UNIQUE (campaign_id, annotator))""",
    """CREATE TABLE IF NOT EXISTS human_labels (
        campaign_id TEXT NOT NULL, item_id TEXT NOT NULL, annotator TEXT NOT NULL, label TEXT NOT NULL,
        created_at BIGINT NOT NULL, PRIMARY KEY (campaign_id, item_id, annotator))""",
    """CREATE TABLE IF NOT EXISTS tasks (
        job_id TEXT NOT NULL, idx BIGINT NOT NULL, kind TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL,
        worker TEXT, token TEXT, lease_until DOUBLE PRECISION, attempts BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL, lines BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (job_id, idx))""",
    "CREATE INDEX IF NOT EXISTS tasks_open ON tasks (state, owner)",
    "CREATE TABLE IF NOT EXISTS owners_served (owner TEXT PRIMARY KEY, served_at DOUBLE PRECISION NOT NULL)",
]


class Database:
    """One connection, used by one thread at a time; rows come back as dicts."""

    dialect = ""

    def __init__(self, connection: Any, where: str):
        self._conn, self.where = connection, where
        self._lock = threading.RLock()

    def _sql(self, sql: str) -> str:
        return sql

    def all(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._conn.execute(self._sql(sql), params)
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def one(self, sql: str, params: tuple = ()) -> dict[str, Any] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: tuple = ()) -> int:
        """Execute a statement; the number of rows it changed."""
        with self._lock:
            return self._conn.execute(self._sql(sql), params).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create_schema(self) -> None:
        with self.transaction():
            for statement in SCHEMA:
                self.run(statement)
            self.run("INSERT INTO meta (name, value) VALUES ('schema', ?) ON CONFLICT (name) DO NOTHING",
                     (str(SCHEMA_VERSION),))
        found = self.one("SELECT value FROM meta WHERE name = 'schema'")
        try:
            self.all("SELECT expires_at, stop_reason, chunks FROM batches WHERE 1 = 0")
            current = found is not None and int(found["value"]) == SCHEMA_VERSION
        except Exception:  # a store made before these columns existed
            current = False
        if not current:
            raise ConfigError(f"the job store at {self.where} was made by another version of rlaif serve (schema "
                              f"{found['value'] if found else 1}, this one needs {SCHEMA_VERSION}): serve from a new --dir "
                              "(or --store), or with the rlaif that made it")


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=60)
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"the job store {path} cannot be opened ({exc}): is it a SQLite file of rlaif serve?") from None
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=60000")
        super().__init__(connection, str(path))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise ConfigError("a PostgreSQL job store needs psycopg: pip install 'rlaif[postgres]'") from None
        try:
            connection = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot reach the PostgreSQL job store ({first}): check --store") from None
        super().__init__(connection, _safe_url(url))

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._conn.transaction():
            yield


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':')[0]}@{tail}"


def open_database(store: str | Path) -> Database:
    """SQLite for a path, PostgreSQL for a postgresql:// (or postgres://) URL; the schema is created if missing."""
    text = str(store)
    if text.startswith(("postgresql://", "postgres://")):
        db: Database = PostgresDatabase(text)
    else:
        db = SQLiteDatabase(Path(text))
    try:
        db.create_schema()
    except BaseException:
        db.close()
        raise
    return db
