"""The test PostgreSQL server of pg_support: real, reachable through psycopg, good for a job queue, and always stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pg_support import PgServer, PgUnavailable, _pid_alive, child_pids, postgres, start_or_skip

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is needed to talk to PostgreSQL: pip install 'psycopg[binary]>=3.2'")
from psycopg import errors  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _connect(dsn: str, **kwargs):
    # A hung lock must fail the test, not stall it.
    return psycopg.connect(dsn, connect_timeout=10, options="-c lock_timeout=5s -c statement_timeout=30s", **kwargs)


def _assert_gone(server: PgServer, pids: list[int]) -> None:
    assert not (server.data_dir / "postmaster.pid").exists() or not server.data_dir.exists()
    assert [pid for pid in pids if _pid_alive(pid)] == []


def test_connect_and_basic_sql(postgres_server, postgres_dsn):
    assert postgres_dsn == f"postgresql://rlaif@127.0.0.1:{postgres_server.port}/rlaif_test"
    with _connect(postgres_dsn) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        assert int(version) >= 120000
        assert conn.execute("SELECT current_database(), current_user").fetchone() == ("rlaif_test", "rlaif")
        conn.execute("CREATE TABLE basic (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        conn.execute("INSERT INTO basic (payload) VALUES (%s::jsonb)", ['{"a": 1}'])
        assert conn.execute("SELECT payload->>'a' FROM basic").fetchone() == ("1",)


def test_concurrent_inserts_from_two_connections(postgres_dsn):
    with _connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE two_writers (id bigserial PRIMARY KEY, writer int NOT NULL, n int NOT NULL)")
    both_inside = threading.Barrier(2, timeout=20)
    failures: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            with _connect(postgres_dsn) as conn:
                with conn.transaction():
                    for n in range(50):
                        conn.execute("INSERT INTO two_writers (writer, n) VALUES (%s, %s)", [number, n])
                    both_inside.wait()  # both transactions are open with their rows inserted: neither blocks the other
        except BaseException as exc:  # noqa: B036 -- reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    with _connect(postgres_dsn) as conn:
        rows = conn.execute("SELECT writer, count(*), count(DISTINCT id) FROM two_writers GROUP BY writer ORDER BY writer").fetchall()
    assert rows == [(1, 50, 50), (2, 50, 50)]


def test_for_update_skip_locked(postgres_dsn):
    with _connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE queue (id int PRIMARY KEY, state text NOT NULL DEFAULT 'queued')")
        conn.execute("INSERT INTO queue (id) SELECT generate_series(1, 3)")
    claim = "SELECT id FROM queue WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    with _connect(postgres_dsn) as first, _connect(postgres_dsn) as second:
        assert first.execute(claim).fetchone() == (1,)  # first holds row 1 in its open transaction
        assert second.execute(claim).fetchone() == (2,)  # not blocked: row 1 is skipped
        with pytest.raises(errors.LockNotAvailable):
            second.execute("SELECT id FROM queue WHERE id = 1 FOR UPDATE NOWAIT")
        second.rollback()
        first.execute("UPDATE queue SET state = 'running' WHERE id = 1")
        first.commit()
        assert second.execute(claim).fetchone() == (2,)
        second.rollback()


def test_skip_locked_claims_every_job_exactly_once(postgres_dsn):
    """The job-store pattern: workers racing on UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)."""
    with _connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id int PRIMARY KEY, state text NOT NULL DEFAULT 'queued', worker int)")
        conn.execute("INSERT INTO jobs (id) SELECT generate_series(1, 200)")
    claimed: dict[int, list[int]] = {w: [] for w in range(4)}
    failures: list[BaseException] = []
    start = threading.Barrier(4, timeout=20)

    def worker(number: int) -> None:
        try:
            with _connect(postgres_dsn, autocommit=True) as conn:
                start.wait()
                while True:
                    row = conn.execute(
                        "UPDATE jobs SET state = 'running', worker = %s WHERE id = ("
                        " SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                        " RETURNING id", [number]).fetchone()
                    if row is None:
                        return
                    claimed[number].append(row[0])
        except BaseException as exc:  # noqa: B036 -- reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    every = sorted(job for jobs in claimed.values() for job in jobs)
    assert every == list(range(1, 201))
    with _connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone() == (200,)


def test_second_server_on_another_port_and_clean_stop(postgres_server, tmp_path):
    second = start_or_skip(tmp_path)
    try:
        assert second.port != postgres_server.port and second.data_dir != postgres_server.data_dir
        with _connect(second.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with _connect(postgres_server.dsn) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
        fresh = second.create_database("another_db")
        with _connect(fresh) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("another_db",)
        assert second.is_running()
        pids = [second.pid, *child_pids(second.pid)]
        assert len(pids) > 1, "a running postmaster has its background workers"
    finally:
        second.stop()
    _assert_gone(second, pids)
    assert not second.root.exists()
    second.stop()  # idempotent
    with psycopg.connect(postgres_server.dsn, connect_timeout=10) as conn:  # the session server is untouched
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stop_reports_pg_ctl_status_stopped(tmp_path):
    server = start_or_skip(tmp_path)
    server.keep_files = True  # keep data/ to ask pg_ctl about it after the stop
    try:
        assert server.pg_ctl("status").returncode == 0
    finally:
        server.stop()
    try:
        status = server.pg_ctl("status")
        assert status.returncode == 3, status.stdout  # 3: "no server running"
        assert not (server.data_dir / "postmaster.pid").exists()
        assert not _pid_alive(server.pid)
    finally:
        server.keep_files = False
        for path in server._remove:
            shutil.rmtree(path, ignore_errors=True)


def test_context_manager_stops_after_an_exception(tmp_path):
    server = start_or_skip(tmp_path)
    pids = [server.pid, *child_pids(server.pid)]
    with pytest.raises(RuntimeError, match="boom"):
        with server:
            raise RuntimeError("boom")
    _assert_gone(server, pids)


def test_postgres_context_manager(tmp_path):
    try:
        with postgres(tmp_path, dbname="postgres") as server:
            with _connect(server.dsn) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
    except PgUnavailable as exc:
        pytest.skip(str(exc))
    assert not _pid_alive(server.pid)


def test_start_and_stop_timing(tmp_path):
    """Prints the cost of one throw-away server (visible with -s); a generous bound catches a pathological machine."""
    began = time.monotonic()
    server = start_or_skip(tmp_path)
    started = time.monotonic() - began
    server.stop()
    total = time.monotonic() - began
    print(f"\n{server.backend} {server.version}: start {started:.2f}s (initdb+start+createdb), stop {server.stop_seconds:.2f}s")
    assert total < 60


INNER_TEST = """
import json, os
from pg_support import postgres_dsn, postgres_server  # noqa: F401

def test_fails_while_holding_the_server(postgres_server):
    with open(os.environ["PG_INNER_RECORD"], "w") as f:
        json.dump({"pid": postgres_server.pid, "data": str(postgres_server.data_dir), "port": postgres_server.port}, f)
    assert False, "a failing test"
"""


def test_session_fixture_stops_the_server_when_a_test_fails(tmp_path):
    """A separate pytest run whose only test fails while holding the session server: the server is still stopped."""
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    record = tmp_path / "record.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), "PG_INNER_RECORD": str(record)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "--basetemp", str(tmp_path / "base"), str(tmp_path / "test_inner.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if not record.exists():
        pytest.skip(f"the inner pytest run started no server: {proc.stdout.strip().splitlines()[-1:]}")
    assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout[-2000:]
    info = json.loads(record.read_text())
    assert not _pid_alive(info["pid"])
    assert not Path(info["data"], "postmaster.pid").exists()
