"""The service's guards against a real `rlaif serve` process on 127.0.0.1 (instant fake judges, real HTTP, no mocks):
the loopback Host check and the content-type check of a keyless service, the key on the API docs, 404/405 in
OpenAI's error shape, the item cap answered before any item is parsed into a model, file listing and deletion, the
modes of the service's files and folders, /v1/models, the completion window and expiry, and the audit report's
Content-Security-Policy."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import stat
import statistics
import threading
import time
from pathlib import Path

import pytest
from service_support import FAKE_JUDGE, KEYS, Server, fake_judge

GOLD = Path(__file__).resolve().parent / "data" / "gold" / "llmbar" / "LLMBar_Natural-subset.json"
ERROR_FIELDS = {"message", "type", "code", "param"}
PAIR = {"prompt": "Name a colour of the sky.", "response_1": "The sky is often blue.", "response_2": "Bananas."}


# --- helpers ------------------------------------------------------------------------------------------------------------
def _send(server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
          timeout: float = 60) -> tuple[int, dict | str, dict[str, str]]:
    """One request over http.client, so that every header (Host included) is exactly the one given."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers={**server.headers(), **(headers or {})})
        reply = conn.getresponse()
        status, text, got = reply.status, reply.read().decode(errors="replace"), {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()
    try:
        return status, json.loads(text), got
    except ValueError:
        return status, text, got


def _error(reply: dict | str, status: int, got: int, code: str | None = None) -> dict:
    """The reply is an error of `status` in OpenAI's shape {"error": {"message", "type", "code", "param"}}."""
    assert got == status, (got, reply)
    assert isinstance(reply, dict) and set(reply) == {"error"} and set(reply["error"]) == ERROR_FIELDS, reply
    assert reply["error"]["message"] and reply["error"]["type"] == "invalid_request_error", reply
    if code is not None:
        assert reply["error"]["code"] == code, reply
    return reply["error"]


def _multipart(purpose: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = "rlaif-" + secrets.token_hex(8)
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'.encode(),
             f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
             f"Content-Type: application/jsonl\r\n\r\n".encode() + content + b"\r\n", f"--{boundary}--\r\n".encode()]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _upload(server: Server, purpose: str, content: bytes, who: str = "alice", filename: str = "in.jsonl") -> dict:
    body, kind = _multipart(purpose, filename, content)
    status, reply, _ = server.request("POST", "/v1/files", raw=body, who=who, headers={"Content-Type": kind})
    assert status == 200 and reply["purpose"] == purpose, reply
    return reply


def _batch_lines(n: int) -> bytes:
    return "".join(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/judge/pairwise",
                               "body": {"pairs": [{**PAIR, "prompt": f"Name a colour of the sky ({i})."}]}}) + "\n"
                   for i in range(n)).encode()


def _batch(server: Server, lines: int, window: str = "24h") -> dict:
    upload = _upload(server, "batch", _batch_lines(lines))
    status, batch, _ = server.request("POST", "/v1/batches", {"input_file_id": upload["id"], "completion_window": window,
                                                              "endpoint": "/v1/judge/pairwise"})
    assert status == 200, batch
    return batch


def _wait(server: Server, path: str, until: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, job, _ = server.request("GET", path)
        assert status == 200, job
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"{path} still {job['status']} after {timeout} s"
        time.sleep(0.2)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _timed_post(server: Server, body: bytes) -> tuple[int, dict | str, float]:
    started = time.perf_counter()
    status, reply, _ = _send(server, "POST", "/v1/judge/pairwise", body, {"Content-Type": "application/json"})
    return status, reply, time.perf_counter() - started


# --- servers --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """No keys (loopback only), a body cap above the 1 MB item-cap bodies of the item-cap test."""
    folder = tmp_path_factory.mktemp("guards-open")
    server = Server(folder / "svc", [str(fake_judge(folder))], extra=["--max-body-bytes", "2000000"])
    yield server.start(timeout=120)
    server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guards-keyed")
    server = Server(folder / "svc", [str(fake_judge(folder))], KEYS)
    yield server.start(timeout=120)
    server.stop()


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A fake judge (with no description of its own) that takes 0.2 s per engine call, small chunks and a 2 s lease:
    a batch runs for many seconds and the completion window is checked every half second."""
    folder = tmp_path_factory.mktemp("guards-slow")
    judge = folder / "fake-slow.yaml"
    spec = re.sub(r"^description:.*\n", "", FAKE_JUDGE, flags=re.MULTILINE)
    judge.write_text(spec.replace("name: fake-pairwise", "name: fake-slow")
                     .replace("backend: {kind: fake}", "backend: {kind: fake, latency_s: 0.2}"))
    server = Server(folder / "svc", [str(judge)], extra=["--batch-size", "4", "--chunk-pairs", "16", "--lease-s", "2"])
    yield server.start(timeout=120)
    server.stop()


# --- 1. a keyless service: loopback Host names only, JSON (or multipart uploads) only -----------------------------------
def test_keyless_service_answers_only_loopback_host_names(open_server):
    s = open_server
    for host in ("evil.example", f"evil.example:{s.port}", "evil.example:8000", "127.0.0.1.evil.example",
                 f"localhost.evil.example:{s.port}", ""):
        for method, path in (("GET", "/health"), ("GET", "/v1/judges")):
            status, reply, _ = _send(s, method, path, headers={"Host": host})
            _error(reply, 421, status, "host_not_allowed")
    status, reply, _ = _send(s, "POST", "/v1/judge/pairwise", json.dumps({"pairs": [PAIR]}).encode(),
                             {"Host": "evil.example", "Content-Type": "application/json"})
    _error(reply, 421, status, "host_not_allowed")
    for host in (f"127.0.0.1:{s.port}", f"localhost:{s.port}", "localhost", f"[::1]:{s.port}", f"LOCALHOST:{s.port}"):
        status, reply, _ = _send(s, "GET", "/v1/judges", headers={"Host": host})
        assert status == 200 and reply["object"] == "list", (host, status, reply)


def test_keyless_service_takes_json_bodies_only(open_server):
    s = open_server
    body = json.dumps({"pairs": [PAIR]}).encode()
    for kind in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, reply, _ = s.request("POST", "/v1/judge/pairwise", raw=body, headers={"Content-Type": kind})
        _error(reply, 415, status, "unsupported_media_type")
    form = b"pairs=%5B%5D&judge=fake-pairwise"
    status, reply, _ = s.request("POST", "/v1/judge/pairwise", raw=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    _error(reply, 415, status, "unsupported_media_type")
    status, reply, _ = _send(s, "POST", "/v1/judge/pairwise", body)  # no Content-Type at all
    _error(reply, 415, status, "unsupported_media_type")
    status, reply, _ = s.request("POST", "/v1/judge/pairwise", raw=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and reply["results"][0]["label"] in ("response_1", "response_2"), reply
    # uploads must be multipart: a JSON (or a form-encoded) body to /v1/files is refused before it is read
    for kind in ("application/json", "text/plain"):
        status, reply, _ = s.request("POST", "/v1/files", raw=json.dumps({"purpose": "batch", "file": "x"}).encode(),
                                     headers={"Content-Type": kind})
        _error(reply, 415, status, "unsupported_media_type")
    assert s.request("GET", "/v1/files")[1]["data"] == []  # nothing was stored
    assert _upload(s, "batch", _batch_lines(1))["bytes"] == len(_batch_lines(1))


# --- 2. the API docs need a key when the service has keys -------------------------------------------------------------------
def test_docs_need_a_key(keyed_server):
    s = keyed_server
    for path in ("/docs", "/openapi.json", "/redoc"):
        status, reply, headers = s.request("GET", path, who=None)
        _error(reply, 401, status, "invalid_api_key")
        assert headers.get("www-authenticate") == "Bearer"
        status, reply, _ = s.request("GET", path, who=None, headers={"Authorization": "Bearer not-a-key-0123456789"})
        _error(reply, 401, status, "invalid_api_key")
        status, reply, _ = s.request("GET", path, who="bob")
        assert status == 200, (path, status)
    status, spec, _ = s.request("GET", "/openapi.json")
    assert "/v1/judge/pairwise" in spec["paths"] and "PairwiseRequest" in spec["components"]["schemas"]
    status, reply, _ = s.request("GET", "/health", who=None)
    assert status == 200 and reply["status"] == "ok"


# --- 3. 404 and 405 in OpenAI's error shape -----------------------------------------------------------------------------------
def test_unknown_routes_and_methods_answer_in_the_error_shape(keyed_server):
    s = keyed_server
    for who in ("alice", None):
        status, reply, _ = s.request("GET", "/v1/nothing-here", who=who)
        _error(reply, 404, status, "not_found")
    for method, path in (("GET", "/v1/judge/pairwise"), ("DELETE", "/v1/batches"), ("PUT", "/health")):
        status, reply, headers = s.request(method, path)
        error = _error(reply, 405, status, "method_not_allowed")
        assert method in error["message"] and path in error["message"], error
        assert headers.get("allow") and method not in headers["allow"], headers


# --- 4. the item cap answers before any item is validated ---------------------------------------------------------------------
def test_item_cap_answers_before_items_are_validated_and_health_stays_up(open_server):
    s = open_server
    huge = json.dumps({"pairs": [{}] * 250_000}).encode()
    # 1,000 items padded to the same size: both bodies cost the same to send and read, and differ in items only
    small = json.dumps({"pairs": [{"prompt": "x" * 986}] * 1_000}).encode()
    assert 900_000 < len(huge) < 2_000_000 and abs(len(small) - len(huge)) < 10_000, (len(small), len(huge))
    timings: dict[int, list[float]] = {1_000: [], 250_000: []}
    for body in (small, huge):  # warm up (the first large body costs the server its first big allocations)
        assert _timed_post(s, body)[0] == 413
    for _ in range(3):
        for n, body in ((1_000, small), (250_000, huge)):
            status, reply, seconds = _timed_post(s, body)
            error = _error(reply, 413, status, "too_many_items")
            assert f"{n} pairs" in error["message"], error
            timings[n].append(seconds)

    # four such bodies at once, while /health is asked again and again on its own connections
    concurrent: list[tuple[int, float]] = []
    health: list[tuple[int, float]] = []
    start = threading.Barrier(5)

    def flood() -> None:
        start.wait()
        status, _, seconds = _timed_post(s, huge)
        concurrent.append((status, seconds))

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    while not health or any(t.is_alive() for t in threads):
        began = time.perf_counter()
        status, reply, _ = _send(s, "GET", "/health", timeout=10)
        health.append((status, time.perf_counter() - began))
        assert status == 200 and reply["status"] == "ok", reply
    for thread in threads:
        thread.join(30)
    small_s, huge_s = statistics.median(timings[1_000]), statistics.median(timings[250_000])
    print(f"\n413 for 1,000 items: {small_s * 1000:.1f} ms; for 250,000 items: {huge_s * 1000:.1f} ms "
          f"(ratio {huge_s / small_s:.1f}); concurrent 413s: {', '.join(f'{t * 1000:.0f} ms' for _, t in concurrent)}; "
          f"/health during them: {len(health)} answered, slowest {max(t for _, t in health) * 1000:.0f} ms")
    assert [status for status, _ in concurrent] == [413] * 4
    assert all(seconds < 10 for _, seconds in concurrent + health)
    assert huge_s < 5 * small_s, timings  # validating 250,000 items first would take seconds, not milliseconds


def test_reward_routes_apply_the_item_cap_before_items_are_validated(open_server):
    """/v1/reward and /get_reward read their bodies as the judge routes do: a list longer than the cap is a 413
    naming it, even when its items are not strings (the cap comes before validation, which would say 422)."""
    n = 200_000
    for path, body in (("/v1/reward", {"prompts": [0] * n, "completions": [0] * n}),
                       ("/get_reward", {"query": [0] * n, "prompts": [0] * n})):
        status, reply, _ = _send(open_server, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        error = _error(reply, 413, status, "too_many_items")
        assert f"{n} " in error["message"], error
    status, reply, _ = _send(open_server, "POST", "/v1/reward", json.dumps({"prompts": [1], "completions": ["x"]}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 422 and "prompts" in json.dumps(reply), reply  # within the cap, the types are still checked


# --- 5. files: listing by purpose, deletion, and private modes ------------------------------------------------------------------
def test_files_list_by_purpose_and_delete(keyed_server):
    s = keyed_server
    files = s.service_dir / "files"
    batch_file = _upload(s, "batch", _batch_lines(2))
    gold = _upload(s, "gold", GOLD.read_bytes(), filename="gold.json")
    on_disk = files / f"{gold['id']}.jsonl"
    assert on_disk.read_bytes() == GOLD.read_bytes()
    assert _mode(on_disk) == 0o600 and _mode(s.service_dir) == 0o700 and _mode(files) == 0o700
    listed = s.request("GET", "/v1/files?purpose=gold")[1]["data"]
    assert [f["id"] for f in listed] == [gold["id"]]
    assert batch_file["id"] in {f["id"] for f in s.request("GET", "/v1/files?purpose=batch")[1]["data"]}
    assert gold["id"] not in {f["id"] for f in s.request("GET", "/v1/files?purpose=batch")[1]["data"]}
    assert s.request("GET", "/v1/files?purpose=gold", who="bob")[1]["data"] == []
    # another key cannot delete it (it does not exist for bob), and the file stays
    status, reply, _ = s.request("DELETE", f"/v1/files/{gold['id']}", who="bob")
    _error(reply, 404, status, "file_not_found")
    assert on_disk.is_file() and s.request("GET", f"/v1/files/{gold['id']}/content")[0] == 200
    status, reply, _ = s.request("DELETE", f"/v1/files/{gold['id']}")
    assert status == 200 and reply == {"id": gold["id"], "object": "file", "deleted": True}, reply
    assert gold["id"] not in {f["id"] for f in s.request("GET", "/v1/files")[1]["data"]}
    for path in (f"/v1/files/{gold['id']}", f"/v1/files/{gold['id']}/content"):
        status, reply, _ = s.request("GET", path)
        _error(reply, 404, status, "file_not_found")
    assert not on_disk.exists() and not any(gold["id"] in p.name for p in files.iterdir())
    status, reply, _ = s.request("DELETE", f"/v1/files/{gold['id']}")  # twice: it is gone
    _error(reply, 404, status, "file_not_found")
    assert (files / f"{batch_file['id']}.jsonl").is_file()  # the other upload is untouched


def test_batch_run_folder_and_output_are_private(keyed_server):
    s = keyed_server
    batch = _wait(s, f"/v1/batches/{_batch(s, 3)['id']}", ("completed", "failed", "cancelled", "expired"))
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3, batch
    folder = s.service_dir / "batches" / batch["id"]
    assert _mode(folder) == 0o700 and _mode(folder / "output.jsonl") == 0o600
    assert _mode(s.service_dir) == 0o700 and _mode(s.service_dir / "files") == 0o700
    # what the stages write inside (the chunks' run folders, the merged dataset) is private too: umask 077
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert len(written) > 10 and {p.name for p in written} >= {"judgments.jsonl", "manifest.json", "dataset.parquet"}
    assert all(_mode(p) & 0o077 == 0 for p in folder.rglob("*")), sorted((oct(_mode(p)), str(p)) for p in folder.rglob("*"))


# --- 6. /v1/models ------------------------------------------------------------------------------------------------------------
def test_models_list_the_judges_and_say_which_are_instant_test_judges(keyed_server, slow_server):
    for s, name in ((keyed_server, "fake-pairwise"), (slow_server, "fake-slow")):
        status, models, _ = s.request("GET", "/v1/models")
        assert status == 200 and models["object"] == "list", models
        assert [(m["id"], m["object"]) for m in models["data"]] == [(name, "model")]
        judges = s.request("GET", "/v1/judges")[1]["data"]
        assert [(j["id"], j["instant_test_judge"]) for j in judges] == [(name, True)]
        assert models["data"][0]["description"] == judges[0]["description"]
        assert "instant" in models["data"][0]["description"].lower(), models
    # a fake judge with no description of its own is described as the instant test judge it is
    assert slow_server.request("GET", "/v1/models")[1]["data"][0]["description"].startswith("instant test judge")
    status, reply, _ = keyed_server.request("GET", "/v1/models", who=None)
    _error(reply, 401, status, "invalid_api_key")


# --- 7. the completion window ---------------------------------------------------------------------------------------------------
def test_completion_window_is_checked_and_sets_expires_at(keyed_server):
    s = keyed_server
    upload = _upload(s, "batch", _batch_lines(1))
    for window in ("forever", "0h", "24", "-1h", "1d", ""):
        status, reply, _ = s.request("POST", "/v1/batches", {"input_file_id": upload["id"], "endpoint": "/v1/judge/pairwise",
                                                             "completion_window": window})
        _error(reply, 400, status, "invalid_completion_window")
    assert upload["id"] not in {b["input_file_id"] for b in s.request("GET", "/v1/batches")[1]["data"]}
    status, batch, _ = s.request("POST", "/v1/batches", {"input_file_id": upload["id"], "endpoint": "/v1/judge/pairwise",
                                                         "completion_window": "24h"})
    assert status == 200 and batch["completion_window"] == "24h"
    assert batch["expires_at"] == batch["created_at"] + 86400, batch
    assert _wait(s, f"/v1/batches/{batch['id']}", ("completed", "failed", "expired"))["status"] == "completed"


def test_a_batch_past_its_window_ends_expired_with_the_finished_part(slow_server):
    s = slow_server
    batch = _batch(s, 400, window="3s")
    assert batch["expires_at"] == batch["created_at"] + 3
    done = _wait(s, f"/v1/batches/{batch['id']}", ("completed", "failed", "cancelled", "expired"), timeout=60)
    counts = done["request_counts"]
    assert done["status"] == "expired" and done["expired_at"] is not None, done
    assert done["expired_at"] >= done["expires_at"]
    assert counts["total"] == 400 and 0 < counts["completed"] < counts["total"], counts
    status, text, _ = s.request("GET", f"/v1/files/{done['output_file_id']}/content")
    assert status == 200
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == counts["completed"]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in lines)
    assert len({line["custom_id"] for line in lines}) == len(lines)
    print(f"\nexpired batch: {counts['completed']} of {counts['total']} lines done "
          f"in its {done['expires_at'] - done['created_at']} s window")


# --- 8. the audit report's Content-Security-Policy ----------------------------------------------------------------------------
def test_audit_report_is_served_under_a_strict_csp(keyed_server):
    s = keyed_server
    gold = _upload(s, "gold", GOLD.read_bytes(), filename="gold.json")
    status, audit, _ = s.request("POST", "/v1/audits", {"gold_file_id": gold["id"], "bootstrap": 10})
    assert status == 200, audit
    audit = _wait(s, f"/v1/audits/{audit['id']}", ("completed", "failed"), timeout=120)
    assert audit["status"] == "completed", audit
    status, page, headers = s.request("GET", f"/v1/audits/{audit['id']}/report")
    assert status == 200 and headers["content-type"].startswith("text/html"), headers
    policy = headers["content-security-policy"]
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in policy.split(";"))
    assert directives["default-src"] == "'none'", policy
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_-]+)'", directives["style-src"])
    assert nonce, policy
    styles = re.findall(r"<style[^>]*>", page)
    assert styles and all(f'nonce="{nonce.group(1)}"' in tag for tag in styles), styles
    assert "<script" not in page or all(f'nonce="{nonce.group(1)}"' in t for t in re.findall(r"<script[^>]*>", page))
    assert headers.get("x-content-type-options") == "nosniff" and headers.get("referrer-policy") == "no-referrer"
    # a fresh nonce for every reply
    again = s.request("GET", f"/v1/audits/{audit['id']}/report")[2]["content-security-policy"]
    assert again != policy


# --- bugs found while writing these tests, fixed -------
def test_keyless_service_refuses_cross_site_origins(open_server):
    s = open_server
    before = len(s.request("GET", "/v1/files")[1]["data"])
    body, kind = _multipart("batch", "junk.jsonl", b'{"junk": 1}\n')
    for origin in ("http://evil.example", "null"):
        status, reply, _ = _send(s, "POST", "/v1/files", body, {"Content-Type": kind, "Origin": origin,
                                                                "Host": f"127.0.0.1:{s.port}"})
        assert len(s.request("GET", "/v1/files")[1]["data"]) == before, f"a page on {origin} uploaded a file"
        _error(reply, 403, status, "origin_not_allowed")
    status, reply, _ = _send(s, "POST", "/v1/files", body, {"Content-Type": kind, "Origin": f"http://localhost:{s.port}"})
    assert status == 200, reply  # the service's own pages (the labeling page) still may


def test_an_overflowing_completion_window_is_a_400(keyed_server):
    s = keyed_server
    upload = _upload(s, "batch", _batch_lines(1))
    status, reply, _ = s.request("POST", "/v1/batches", {"input_file_id": upload["id"], "endpoint": "/v1/judge/pairwise",
                                                         "completion_window": "99999999999999999999h"})
    _error(reply, 400, status, "invalid_completion_window")


def test_the_gold_file_of_an_active_audit_cannot_be_deleted(slow_server):
    s = slow_server
    busy = _batch(s, 64)  # four 16-pair chunks on the slow judge: both task slots are busy for seconds
    try:
        gold = _upload(s, "gold", GOLD.read_bytes(), filename="gold.json")
        status, audit, _ = s.request("POST", "/v1/audits", {"gold_file_id": gold["id"], "bootstrap": 10})
        assert status == 200 and audit["status"] in ("queued", "running"), audit
        status, reply, _ = s.request("DELETE", f"/v1/files/{gold['id']}")
        _error(reply, 409, status, "file_in_use")
    finally:
        s.request("POST", f"/v1/batches/{busy['id']}/cancel")


def test_lists_are_newest_first_for_jobs_made_within_one_second(tmp_path: Path):
    """created_at has whole seconds; jobs made in the same second are still listed newest first (the id's time part),
    so a client's `batches.list().data[0]` is the batch it just made."""
    from rlaif.service.records import BatchJob, BatchStatus
    from rlaif.service.store import JobStore, new_id, valid_id

    store = JobStore.open(tmp_path / "jobs.sqlite")
    made = []
    for _ in range(40):
        batch = BatchJob(id=new_id("batch"), owner="k", endpoint="/v1/judge/pairwise", input_file_id=new_id("file"),
                         judge="j", completion_window="24h", status=BatchStatus.validating, created_at=1_000,
                         expires_at=90_000)
        assert valid_id("batch", batch.id)
        store.batches.add(batch)
        made.append(batch.id)
    assert [b.id for b in store.batches.owned("k", limit=100)] == made[::-1]
    page = store.batches.owned("k", limit=10, after=made[25])
    assert [b.id for b in page] == made[24:14:-1]
