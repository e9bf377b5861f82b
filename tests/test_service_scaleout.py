"""The service on its scale-out floor, as real processes on 127.0.0.1: several workers sharing one job store (SQLite in
WAL mode, and a real PostgreSQL server), a worker SIGKILLed mid-batch whose chunks another finishes with no label lost
or written twice, fair shares between keys, cancel within one engine slice, a batch of invalid lines that ends with
its counts and reasons, and the Ray and fleet executors. The judge is the instant fake backend, slowed down where
work must be in flight (its labels judge nothing: this is our own plumbing)."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from service_support import FAKE_JUDGE, KEYS, Server


def _judge(folder: Path, latency_s: float = 0.0) -> Path:
    path = folder / "fake-pairwise.yaml"
    path.write_text(FAKE_JUDGE.replace("backend: {kind: fake}", f"backend: {{kind: fake, latency_s: {latency_s}}}"))
    return path


def _lines(n: int, tag: str = "", per_line: int = 1) -> bytes:
    rows = []
    for i in range(n):
        pairs = [{"prompt": f"Say something {tag} {i}.{j}", "response_1": f"One answer {i}.{j}.",
                  "response_2": f"Another answer {i}.{j}, longer."} for j in range(per_line)]
        rows.append(json.dumps({"custom_id": f"{tag}req-{i}", "method": "POST", "url": "/v1/judge/pairwise",
                                "body": {"pairs": pairs}}))
    return ("\n".join(rows) + "\n").encode()


def _client(server: Server, who: str = "alice"):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEYS[who], max_retries=0, timeout=60)


def _submit(server: Server, data: bytes, who: str = "alice", window: str = "24h") -> str:
    client = _client(server, who)
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window=window).id


def _batch(server: Server, batch_id: str, who: str = "alice") -> dict:
    status, reply, _ = server.request("GET", f"/v1/batches/{batch_id}", who=who)
    assert status == 200, reply
    return reply  # type: ignore[return-value]


def _wait(server: Server, batch_id: str, timeout: float = 240, who: str = "alice") -> dict:
    deadline = time.monotonic() + timeout
    while (batch := _batch(server, batch_id, who))["status"] not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, f"batch still {batch['status']} after {timeout} s: {batch}"
        time.sleep(0.3)
    return batch


def _file_lines(server: Server, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    status, text, _ = server.request("GET", f"/v1/files/{file_id}/content")
    assert status == 200
    return [json.loads(line) for line in str(text).splitlines() if line.strip()] if isinstance(text, str) else [text]


def _exactly_once(server: Server, batch: dict, total: int) -> None:
    """Every request line is answered once (output or error file), and every labeled pair is one dataset row."""
    lines = _file_lines(server, batch["output_file_id"]) + _file_lines(server, batch["error_file_id"])
    ids = Counter(line["custom_id"] for line in lines)
    assert len(ids) == total and max(ids.values()) == 1, f"{len(ids)} distinct of {total}, repeats: {ids.most_common(2)}"
    counts = batch["request_counts"]
    assert counts["total"] == total and counts["completed"] + counts["failed"] == total, counts
    status, prefs, _ = server.request("GET", f"/v1/batches/{batch['id']}/preferences.jsonl")
    assert status == 200
    rows = [json.loads(x) for x in str(prefs).splitlines() if x.strip()]
    labeled = sum(1 for line in lines for r in (line["response"]["body"] or {}).get("results", [])
                  if r["label"] in ("response_1", "response_2"))
    pair_ids = Counter(r["pair_id"] for r in rows)
    assert len(rows) == labeled == len(pair_ids), (len(rows), labeled, len(pair_ids))


def _leases(store: Path) -> list[tuple]:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT job_id, idx, kind, state, worker, attempts FROM tasks").fetchall()


def _kill_a_worker_holding_a_lease(leases) -> int:
    """SIGKILL the worker process that holds a label chunk now; its pid."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = [row for row in leases() if row[2] == "label" and row[3] == "leased" and row[4]]
        if held:
            pid = int(held[0][4].rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.05)
    raise AssertionError("no worker held a chunk within 60 s")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def test_two_workers_share_a_batch_and_one_killed_mid_batch_loses_nothing(folder: Path):
    server = Server(folder / "svc", [str(_judge(folder, latency_s=0.05))], KEYS,
                    extra=["--workers", "2", "--chunk-pairs", "40", "--batch-size", "10", "--lease-s", "3"])
    server.start(timeout=120)
    try:
        batch_id = _submit(server, _lines(1200))
        killed = _kill_a_worker_holding_a_lease(lambda: _leases(folder / "svc" / "service.sqlite"))
        batch = _wait(server, batch_id)
        assert batch["status"] == "completed", batch
        _exactly_once(server, batch, 1200)
        tasks = _leases(folder / "svc" / "service.sqlite")
        workers = {row[4].rsplit(":", 1)[1] for row in tasks if row[2] == "label"}
        assert len(workers - {str(killed)}) >= 1 and len(workers) >= 2, f"chunks done by {workers} (killed {killed})"
        assert any(row[5] > 1 for row in tasks if row[2] == "label"), "the killed worker's chunk was leased again"
        assert all(row[3] == "done" for row in tasks), [row for row in tasks if row[3] != "done"]
    finally:
        server.stop()


def test_postgres_store_shared_by_two_servers_one_killed(folder: Path, postgres_server):
    dsn = postgres_server.create_database("svc_kill")
    judge = str(_judge(folder, latency_s=0.05))
    options = ["--store", dsn, "--chunk-pairs", "40", "--batch-size", "10", "--lease-s", "3"]
    first = Server(folder / "svc", [judge], KEYS, extra=options).start(timeout=120)
    second = Server(folder / "svc", [judge], KEYS, extra=options)
    second.log = folder / "second-server.log"
    second.start(timeout=120)
    import psycopg

    def leases() -> list[tuple]:
        with psycopg.connect(dsn) as db:
            return db.execute("SELECT job_id, idx, kind, state, worker, attempts FROM tasks").fetchall()

    try:
        batch_id = _submit(first, _lines(800, "pg"))
        assert not (folder / "svc" / "service.sqlite").exists(), "the PostgreSQL store is the only store"
        killed = _kill_a_worker_holding_a_lease(leases)
        survivor = second if first.proc is not None and first.proc.pid == killed else first
        batch = _wait(survivor, batch_id)
        assert batch["status"] == "completed", batch
        _exactly_once(survivor, batch, 800)
        assert any(row[5] > 1 for row in leases() if row[2] == "label"), "the killed server's chunk was leased again"
    finally:
        first.stop()
        second.stop()


def test_two_keys_get_fair_shares_and_each_limit_holds(folder: Path):
    server = Server(folder / "svc", [str(_judge(folder, latency_s=0.02))], KEYS,
                    extra=["--chunk-pairs", "20", "--batch-size", "10", "--slots", "1"]).start(timeout=120)
    try:
        big = _submit(server, _lines(600, "a"), "alice")
        small = _submit(server, _lines(200, "b"), "bob")
        done_small = _wait(server, small, who="bob")
        at_that_time = _batch(server, big)["request_counts"]["completed"]
        # Round-robin by key: bob's 10 chunks alternate with alice's, so alice has done about as many lines (bob's
        # 200 while alice did ~200), not 600 first (one key after the other) nor none (bob first).
        assert done_small["status"] == "completed"
        assert 100 <= at_that_time <= 400, f"alice had {at_that_time} of 600 lines done when bob's 200 finished"
        assert _wait(server, big)["status"] == "completed"
    finally:
        server.stop()


def test_a_batch_of_only_invalid_lines_fails_with_its_counts_and_every_reason(folder: Path):
    server = Server(folder / "svc", [str(_judge(folder))], KEYS).start(timeout=120)
    try:
        bad = b'not json\n{"custom_id": "x", "method": "POST", "url": "/v1/judge/pointwise", "body": {}}\n\xff\xfe\n'
        batch = _wait(server, _submit(server, bad))
        assert batch["status"] == "failed" and batch["errors"]["data"][0]["code"] == "no_valid_requests", batch
        assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
        errors = _file_lines(server, batch["error_file_id"])
        reasons = [e["error"]["message"] for e in errors]
        assert len(errors) == 3 and "not valid JSON" in reasons[0] and "endpoint" in reasons[1] and "UTF-8" in reasons[2]
    finally:
        server.stop()


def test_cancel_stops_the_chunk_in_flight_within_a_slice(folder: Path):
    # One chunk of 400 pairs = 100 engine calls of 8 requests (4 pairs x 2 orders) at 0.1 s each: about 10 s.
    server = Server(folder / "svc", [str(_judge(folder, latency_s=0.1))], KEYS,
                    extra=["--chunk-pairs", "400", "--batch-size", "4"]).start(timeout=120)
    try:
        batch_id = _submit(server, _lines(400))
        deadline = time.monotonic() + 60
        while _batch(server, batch_id)["status"] != "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        server.request("POST", f"/v1/batches/{batch_id}/cancel")
        batch = _wait(server, batch_id, timeout=60)
        assert batch["status"] == "cancelled", batch
        # The chunk was cut short at its next slice: none of its lines is answered, and its run folder holds a part.
        assert batch["request_counts"]["completed"] == 0 and not batch["output_file_id"], batch["request_counts"]
        judged = (folder / "svc" / "batches" / batch_id / "chunks" / "000001" / "judgments.jsonl")
        done = sum(1 for _ in judged.open()) if judged.exists() else 0
        assert done < 400, f"the chunk ran to its end ({done} judgments) instead of stopping"
    finally:
        server.stop()


def test_ray_executor_labels_a_batch_on_a_local_ray(folder: Path):
    pytest.importorskip("ray")
    server = Server(folder / "svc", [str(_judge(folder))], KEYS,
                    extra=["--executor", "ray", "--ray-actors", "1", "--chunk-pairs", "150"]).start(timeout=300)
    try:
        batch = _wait(server, _submit(server, _lines(300)), timeout=300)
        assert batch["status"] == "completed", batch
        _exactly_once(server, batch, 300)
        manifests = sorted((folder / "svc" / "batches" / batch["id"] / "chunks").glob("*/manifest.json"))
        assert len(manifests) == 2 and all(json.loads(m.read_text())["runner"] == "ray" for m in manifests)
    finally:
        server.stop()


def test_fleet_executor_spreads_chunks_over_the_servers(folder: Path):
    from test_openai_backend import StubServer

    stubs = [StubServer(), StubServer()]
    judge = folder / "fleet.yaml"
    judge.write_text(FAKE_JUDGE.replace("name: fake-pairwise", "name: stub-fleet").replace(
        "backend: {kind: fake}", "backend: {{kind: openai, base_urls: [{}], model: stub, api_key_env: null, "
        "max_concurrency: 4}}".format(", ".join(s.url + "/v1" for s in stubs))))
    server = Server(folder / "svc", [str(judge)], KEYS, extra=["--executor", "fleet", "--chunk-pairs", "20"]).start(timeout=120)
    try:
        batch = _wait(server, _submit(server, _lines(100)))
        assert batch["status"] == "completed", batch
        _exactly_once(server, batch, 100)
        assert all(len(s.requests) > 20 for s in stubs), [len(s.requests) for s in stubs]
    finally:
        server.stop()
        for stub in stubs:
            stub.close()
