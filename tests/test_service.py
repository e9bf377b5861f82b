"""`rlaif serve` as a real process on 127.0.0.1: the auth matrix, hostile input, the openai-client batch round trip,
cancellation and the job cap on an instant fake judge (our own plumbing), then on the embedded model: synchronous
judging equals the label stage, micro-batching, and SIGKILL + restart mid-batch with no label lost or doubled."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from service_support import KEYS, Server, fake_judge

POINTWISE = Path(__file__).resolve().parents[1] / "judges" / "smollm2-pointwise.yaml"
GOLD = Path(__file__).resolve().parent / "data" / "gold" / "llmbar" / "LLMBar_Natural-subset.json"


def _pairs(n: int, start: int = 0, tag: str = "") -> list[dict]:
    return [{"prompt": f"Name a colour of the sky {tag}{i}.",
             "response_1": f"The sky is often blue ({i}).", "response_2": f"Bananas {i}."} for i in range(start, start + n)]


def _lines(pairs: list[dict], url: str = "/v1/judge/pairwise") -> str:
    return "".join(json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": url, "body": {"pairs": [p]}}) + "\n"
                   for i, p in enumerate(pairs))


def _openai(server: Server, who: str = "alice"):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEYS[who], max_retries=0)


def _wait(client, batch_id: str, timeout: float = 600, until=("completed", "failed", "cancelled")):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout} s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake-service")
    pointwise = folder / "fake-pointwise.yaml"
    spec = yaml.safe_load(POINTWISE.read_text())
    pointwise.write_text(yaml.safe_dump({**spec, "name": "fake-pointwise", "backend": {"kind": "fake"}}))
    server = Server(folder / "svc", [str(fake_judge(folder)), str(pointwise)], KEYS,
                    extra=["--max-items", "8", "--max-body-bytes", "20000", "--max-jobs-per-key", "2"])
    yield server.start(timeout=120)
    server.stop()


# --- who may do what ------------------------------------------------------------------------------------------------
def test_auth_matrix(fake_server):
    s = fake_server
    assert s.request("GET", "/health", who=None)[0] == 200
    one = {"pairs": _pairs(1)}
    for method, path, body in [("GET", "/v1/judges", None), ("POST", "/v1/judge/pairwise", one), ("GET", "/metrics", None),
                               ("POST", "/get_reward", {"query": ["ab"], "prompts": ["a"]}), ("GET", "/v1/batches", None),
                               ("GET", "/v1/files", None), ("POST", "/v1/reward", {"prompts": ["a"], "completions": ["b"]})]:
        status, reply, headers = s.request(method, path, body, who=None)
        assert status == 401 and reply["error"]["code"] == "invalid_api_key", (path, status, reply)
        assert headers.get("www-authenticate") == "Bearer"
        assert s.request(method, path, body, headers={"Authorization": "Bearer wrong-key-0123456789"}, who=None)[0] == 401
        assert s.request(method, path, body, headers={"Authorization": KEYS["alice"]}, who=None)[0] == 401  # no scheme
    alice, bob = _openai(s, "alice"), _openai(s, "bob")
    upload = alice.files.create(file=("in.jsonl", io.BytesIO(_lines(_pairs(3)).encode())), purpose="batch")
    batch = alice.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
    done = _wait(alice, batch.id)
    for path in [f"/v1/files/{upload.id}", f"/v1/files/{upload.id}/content", f"/v1/batches/{batch.id}",
                 f"/v1/files/{done.output_file_id}/content", f"/v1/batches/{batch.id}/dataset.parquet"]:
        assert s.request("GET", path, who="alice")[0] == 200, path
        status, reply, _ = s.request("GET", path, who="bob")
        assert status == 404, (path, status)  # another key's job does not exist for bob
    assert s.request("POST", f"/v1/batches/{batch.id}/cancel", who="bob")[0] == 404
    assert not bob.batches.list().data and not bob.files.list().data
    # bob cannot start a batch on alice's file either
    assert s.request("POST", "/v1/batches", {"input_file_id": upload.id, "endpoint": "/v1/judge/pairwise"}, who="bob")[0] == 404
    log = s.log.read_text()
    assert KEYS["alice"] not in log and KEYS["bob"] not in log and "colour of the sky" not in log


def test_non_loopback_bind_without_keys_is_refused(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "RLAIF_API_KEYS"}
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "serve", "--host", "0.0.0.0", "--dir", str(tmp_path / "s")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "without API keys" in done.stderr and "RLAIF_API_KEYS" in done.stderr


# --- hostile input ---------------------------------------------------------------------------------------------------
def test_hostile_input_gets_a_clear_4xx_and_disturbs_nothing(fake_server):
    s = fake_server
    cases = [
        ("malformed JSON", "POST", "/v1/judge/pairwise", b'{"pairs": [', 400, "invalid_json"),
        ("wrong type", "POST", "/v1/judge/pairwise", json.dumps({"pairs": "abc"}).encode(), 422, "invalid_request"),
        ("wrong item type", "POST", "/v1/judge/pairwise", json.dumps({"pairs": [{"prompt": 3, "response_1": "a",
                                                                               "response_2": "b"}]}).encode(), 422, None),
        ("empty text", "POST", "/v1/judge/pairwise", json.dumps({"pairs": [{"prompt": " ", "response_1": "a",
                                                                          "response_2": "b"}]}).encode(), 422, None),
        ("unknown field", "POST", "/v1/judge/pairwise", json.dumps({"pairs": _pairs(1), "x": 1}).encode(), 422, None),
        ("no pairs", "POST", "/v1/judge/pairwise", json.dumps({"pairs": []}).encode(), 422, None),
        ("too many items", "POST", "/v1/judge/pairwise", json.dumps({"pairs": _pairs(9)}).encode(), 413, "too_many_items"),
        ("oversized body", "POST", "/v1/judge/pairwise", json.dumps({"pairs": [{"prompt": "x" * 30000, "response_1": "a",
                                                                              "response_2": "b"}]}).encode(), 413,
         "request_too_large"),
        ("unknown judge", "POST", "/v1/judge/pairwise", json.dumps({"judge": "nope", "pairs": _pairs(1)}).encode(), 404,
         "judge_not_found"),
        ("judge of the wrong kind", "POST", "/v1/judge/pointwise", json.dumps({"judge": "fake-pairwise", "items": [
            {"prompt": "a", "response": "b"}]}).encode(), 404, "judge_not_found"),
        ("reward lengths", "POST", "/v1/reward", json.dumps({"prompts": ["a", "b"], "completions": ["c"]}).encode(), 422,
         "length_mismatch"),
        ("unknown endpoint", "POST", "/v1/batches", json.dumps({"input_file_id": "file-" + "0" * 24,
                                                                 "endpoint": "/v1/chat/completions"}).encode(), 400, None),
        ("unknown file", "POST", "/v1/batches", json.dumps({"input_file_id": "file-" + "0" * 24,
                                                             "endpoint": "/v1/judge/pairwise"}).encode(), 404,
         "file_not_found"),
    ]
    for name, method, path, raw, status, code in cases:
        got, reply, _ = s.request(method, path, raw=raw)
        assert got == status, (name, got, reply)
        assert isinstance(reply, dict) and reply["error"]["message"], name
        if code:
            assert reply["error"]["code"] == code, (name, reply)
    # ids that try to leave the service folder, or are not ids at all
    for path in ["/v1/files/..%2Fservice.sqlite/content", "/v1/files/../service.sqlite", "/v1/files/%2E%2E/content",
                 "/v1/batches/..%2F..%2Fetc", "/v1/audits/..", "/v1/files/file-../content"]:
        got, reply, _ = s.request("GET", path)
        assert got in (404, 405) and "sqlite" not in str(reply).lower().replace("service.sqlite", ""), (path, got)
    # a chunked body over the limit (no Content-Length) is cut off too
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
    conn.putrequest("POST", "/v1/judge/pairwise")
    conn.putheader("Authorization", f"Bearer {KEYS['alice']}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for _ in range(5):
        chunk = b" " * 10000
        conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 413
    conn.close()
    # nothing else disturbed: the service still judges
    status, reply, _ = s.request("POST", "/v1/judge/pairwise", {"pairs": _pairs(2)})
    assert status == 200 and [r["label"] for r in reply["results"]].count(None) == 0


# --- bulk jobs --------------------------------------------------------------------------------------------------------
def test_openai_client_batch_round_trip_on_the_fake_judge(fake_server):
    client = _openai(fake_server)
    good = _pairs(12, tag="rt")
    text = _lines(good) + "not json\n" + json.dumps({"custom_id": "req-0", "method": "POST", "url": "/v1/judge/pairwise",
                                                     "body": {"pairs": _pairs(1)}}) + "\n" + json.dumps(
        {"custom_id": "empty", "method": "POST", "url": "/v1/judge/pairwise",
         "body": {"pairs": [{"prompt": "p", "response_1": "", "response_2": "b"}]}}) + "\n"
    upload = client.files.create(file=("in.jsonl", io.BytesIO(text.encode())), purpose="batch")
    assert upload.bytes == len(text.encode()) and upload.purpose == "batch"
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
    assert batch.status == "validating" and batch.endpoint == "/v1/judge/pairwise"
    done = _wait(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.total == 15 and done.request_counts.completed == 12 and done.request_counts.failed == 3
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    out = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(12))
    for line in out:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        result = line["response"]["body"]["results"][0]
        assert result["label"] in ("response_1", "response_2") and 0.5 <= result["probability"] <= 1
    reasons = {e["custom_id"]: e["error"]["message"] for e in errors}
    assert "not valid JSON" in reasons[None] and "earlier line" in reasons["req-0"] and "non-empty" in reasons["empty"]
    assert client.batches.list().data[0].id == batch.id
    # the preference dataset is downloadable as Parquet and JSONL, one row per labeled pair
    import pyarrow.parquet as pq

    status, _, _ = fake_server.request("GET", f"/v1/batches/{batch.id}/dataset.parquet")
    assert status == 200
    with fake_server_download(fake_server, f"/v1/batches/{batch.id}/dataset.parquet") as path:
        table = pq.read_table(path)
    assert table.num_rows == 12 and set(table.column("pair_id").to_pylist()) == {f"req-{i}" for i in range(12)}
    status, text, _ = fake_server.request("GET", f"/v1/batches/{batch.id}/preferences.jsonl")
    assert status == 200 and len(str(text).splitlines()) == 12


class fake_server_download:
    """Download a route's bytes to a temporary file (for readers that want a path)."""

    def __init__(self, server: Server, path: str):
        import tempfile
        import urllib.request

        req = urllib.request.Request(server.url + path, headers=server.headers())
        with urllib.request.urlopen(req, timeout=60) as reply:
            data = reply.read()
        self.file = tempfile.NamedTemporaryFile(suffix=Path(path).suffix)
        self.file.write(data)
        self.file.flush()

    def __enter__(self) -> str:
        return self.file.name

    def __exit__(self, *exc) -> None:
        self.file.close()


def test_pointwise_batch(fake_server):
    client = _openai(fake_server)
    lines = "".join(json.dumps({"custom_id": f"s{i}", "method": "POST", "url": "/v1/judge/pointwise",
                                "body": {"items": [{"prompt": "Say hi.", "response": f"Hi {i}!"}]}}) + "\n" for i in range(5))
    upload = client.files.create(file=("p.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    done = _wait(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pointwise",
                                               completion_window="24h").id)
    assert done.status == "completed" and done.request_counts.completed + done.request_counts.failed == 5
    files = [done.output_file_id, done.error_file_id]
    lines_out = [json.loads(x) for f in files if f for x in client.files.content(f).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines_out) == [f"s{i}" for i in range(5)]
    for x in lines_out:
        result = x["response"]["body"]["results"][0]
        assert (result["score"] is None) == (x["error"] is not None)


def test_cancel_stops_a_running_batch_and_the_job_cap_answers_429(fake_server):
    client = _openai(fake_server)
    pairs = _pairs(30000, tag="big")
    upload = client.files.create(file=("big.jsonl", io.BytesIO(_lines(pairs).encode())), purpose="batch")
    first = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
    second = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
    status, reply, headers = fake_server.request("POST", "/v1/batches", {"input_file_id": upload.id,
                                                                         "endpoint": "/v1/judge/pairwise"})
    assert status == 429 and reply["error"]["code"] == "too_many_jobs" and int(headers["retry-after"]) > 0
    running = _wait(client, first.id, until=("in_progress",), timeout=120)
    assert running.request_counts.total == 30000
    client.batches.cancel(second.id)  # queued behind the first: cancelled without running
    cancelled = _wait(client, client.batches.cancel(first.id).id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    assert cancelled.request_counts.completed < 30000, "the cancel stopped the job before its end"
    assert client.batches.retrieve(second.id).status == "cancelled"
    folder = fake_server.service_dir / "batches" / first.id
    judgments = folder / "judgments.jsonl"
    assert not judgments.exists() or sum(1 for _ in judgments.open()) < 30000, "judging stopped at the cancel"
    # the slots are free again
    third = client.batches.create(input_file_id=_small_upload(client).id, endpoint="/v1/judge/pairwise",
                                  completion_window="24h")
    assert _wait(client, third.id).status == "completed"


def _small_upload(client):
    return client.files.create(file=("s.jsonl", io.BytesIO(_lines(_pairs(2, tag="small")).encode())), purpose="batch")


def test_audit_job_on_an_uploaded_gold_set(fake_server):
    s = fake_server
    client = _openai(s)
    gold = client.files.create(file=("gold.json", io.BytesIO(GOLD.read_bytes())), purpose="gold")
    status, audit, _ = s.request("POST", "/v1/audits", {"gold_file_id": gold.id, "min_kappa": 0.99})
    assert status == 200 and audit["status"] == "queued", audit
    deadline = time.monotonic() + 300
    while audit["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
        audit = s.request("GET", f"/v1/audits/{audit['id']}")[1]
    assert audit["status"] == "completed", audit
    assert audit["result"]["n_items"] == 30 and audit["result"]["gate"]["verdict"] == "fail"
    status, metrics, _ = s.request("GET", audit["metrics_url"])
    assert status == 200 and metrics["agreement"]["accuracy_no_ties"]["value"] is not None
    status, page, _ = s.request("GET", audit["report_url"])
    assert status == 200 and "Judge audit" in page and "data:image/png;base64," in page
    assert s.request("GET", audit["report_url"], who="bob")[0] == 404


def test_metrics_in_prometheus_format(fake_server):
    fake_server.request("POST", "/v1/judge/pairwise", {"pairs": _pairs(2, tag="m")})
    status, text, headers = fake_server.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("rlaif_queue_depth{kind=\"sync\"}", "rlaif_jobs{", "rlaif_labels_total{outcome=\"labeled\",route=\"sync\"}",
                 "rlaif_request_latency_seconds_bucket", "rlaif_http_errors_total", "rlaif_engine_calls"):
        assert name in text, name


# --- the engine worker's order of work (our own logic, on a slow fake backend) ----------------------------------------
def test_sync_requests_go_ahead_of_bulk_work_and_are_micro_batched():
    from rlaif.backends import Choice, Completion, CompletionRequest, FakeBackend
    from rlaif.records import Message
    from rlaif.service.engines import EngineWorker

    calls: list[list[str]] = []

    class Slow(FakeBackend):
        def complete(self, requests):
            calls.append([r.messages[0].content for r in requests])
            time.sleep(0.05)
            return super().complete(requests)

    backend = Slow(lambda r: Completion(choices=[Choice(text=r.messages[0].content)]))
    worker = EngineWorker(backend, max_requests=64, bulk_slice=4)

    def req(text):
        return CompletionRequest(messages=[Message(role="user", content=text)])

    bulk_done = []
    bulk = threading.Thread(target=lambda: bulk_done.append(worker.submit([req(f"bulk{i}") for i in range(40)], bulk=True)))
    bulk.start()
    while not calls:
        time.sleep(0.005)
    syncs = [threading.Thread(target=lambda i=i: worker.submit([req(f"sync{i}")], bulk=False)) for i in range(6)]
    for t in syncs:
        t.start()
    for t in syncs:
        t.join()
    bulk.join()
    worker.close()
    assert [c.choices[0].text for c in bulk_done[0]] == [f"bulk{i}" for i in range(40)], "bulk results in order"
    sync_calls = [i for i, call in enumerate(calls) if any(t.startswith("sync") for t in call)]
    last_bulk = max(i for i, call in enumerate(calls) if any(t.startswith("bulk") for t in call))
    assert sync_calls and max(sync_calls) < last_bulk, "every sync request was served before the bulk work ended"
    assert len(sync_calls) < 6, "sync requests that waited together went in one engine call"
    assert all(len(call) <= 4 for call in calls if call[0].startswith("bulk")), "bulk work goes a slice at a time"


# --- the embedded model ------------------------------------------------------------------------------------------------
REAL = [{"id": "sky", "prompt": "What colour is the sky on a clear day?", "response_1": "Blue.", "response_2": "Green, usually."},
        {"id": "add", "prompt": "What is 2 + 2?", "response_1": "5", "response_2": "4"},
        {"id": "cap", "prompt": "What is the capital of France?", "response_1": "Paris is the capital of France.",
         "response_2": "I do not know."},
        {"id": "tea", "prompt": "How do I make tea?", "response_1": "Boil water, steep the tea for three minutes.",
         "response_2": "Tea."}]


@pytest.mark.vllm
def test_sync_judging_equals_the_label_stage(real_service, vllm_backend, tmp_path):
    from rlaif.backends import SharedBackend
    from rlaif.records import CandidatePair
    from rlaif.stages.label import label_stage
    from rlaif.store import RunFolder

    status, reply, _ = real_service.request("POST", "/v1/judge/pairwise", {"pairs": REAL})
    assert status == 200, reply
    served = {r["pair_id"]: r for r in reply["results"]}
    label_stage([CandidatePair(**p) for p in REAL], "smollm2-pairwise", SharedBackend(vllm_backend), RunFolder(tmp_path),
                progress=False)
    rows = {json.loads(line)["pair_id"]: json.loads(line) for line in (tmp_path / "preferences.jsonl").open()}
    unlabeled = {json.loads(line)["pair_id"] for line in (tmp_path / "unlabeled.jsonl").open()}
    assert set(rows) | unlabeled == set(served)
    for pair_id, result in served.items():
        if pair_id in unlabeled:
            assert result["label"] is None and result["reason"]
            continue
        row = rows[pair_id]
        assert result["p_response_1"] == pytest.approx(row["p_response_1"], abs=2e-3), pair_id
        assert result["chosen_is_response_1"] == row["chosen_is_response_1"] or abs(row["p_response_1"] - 0.5) < 2e-3
        for column in ("judge", "judge_model", "template_version", "constitution_version", "principle_ids", "orders_agree",
                       "prompt_tokens"):
            assert result[column] == row[column], (pair_id, column)
    judges = real_service.request("GET", "/v1/judges")[1]["data"]
    assert {j["id"]: j["mode"] for j in judges} == {"smollm2-pairwise": "pairwise", "smollm2-pointwise": "pointwise"}
    assert all(j["template"]["version"] and j["constitution"]["version"] for j in judges)


@pytest.mark.vllm
def test_concurrent_requests_share_engine_calls_and_rewards_are_never_a_silent_zero(real_service):
    def calls() -> tuple[float, float]:
        text = real_service.request("GET", "/metrics")[1]
        values = {}
        for line in str(text).splitlines():
            for name in ("rlaif_engine_calls{", "rlaif_engine_requests{"):
                if line.startswith(name):
                    values[name] = values.get(name, 0) + float(line.split()[-1])
        return values.get("rlaif_engine_calls{", 0), values.get("rlaif_engine_requests{", 0)

    before = calls()
    replies: list[int] = []
    threads = [threading.Thread(target=lambda p=p: replies.append(
        real_service.request("POST", "/v1/judge/pairwise", {"pairs": [p]})[0])) for p in REAL * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = calls()
    assert replies == [200] * 8
    engine_calls, engine_requests = after[0] - before[0], after[1] - before[1]
    assert engine_requests == 16, "two orders per pair"
    assert engine_calls < 8, f"8 concurrent requests took {engine_calls} engine calls: no micro-batching"
    status, reward, _ = real_service.request("POST", "/v1/reward", {
        "prompts": [REAL[0]["prompt"]] * 2, "completions": ["Blue.", " "], "references": ["Green, usually."] * 2})
    assert status == 200 and reward["kind"] == "pairwise_vs_reference"
    assert 0 <= reward["rewards"][0] <= 1 and reward["reasons"][0] is None
    assert reward["rewards"][1] is None and reward["reasons"][1] == "empty completion"
    status, scored, _ = real_service.request("POST", "/v1/reward", {"prompts": ["Say hi."], "completions": ["Hi!"]})
    assert status == 200 and scored["kind"] == "pointwise_score"
    assert (scored["rewards"][0] is None) == (scored["reasons"][0] is not None)
    prompt = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    status, openrlhf, _ = real_service.request("POST", "/get_reward", {
        "query": [prompt + "4", prompt + "5"], "prompts": [prompt, prompt], "labels": ["5", "4"]})
    assert status == 200 and len(openrlhf["rewards"]) == 2
    assert all(r is None or 0 <= r <= 1 for r in openrlhf["rewards"])


@pytest.mark.vllm
def test_openai_batch_round_trip_on_the_model_matches_sync_judging(real_service):
    client = _openai(real_service)
    upload = client.files.create(file=("real.jsonl", io.BytesIO(_lines(REAL).encode())), purpose="batch")
    done = _wait(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise",
                                               completion_window="24h").id)
    assert done.status == "completed" and done.request_counts.total == 4
    lines = [json.loads(x) for f in (done.output_file_id, done.error_file_id) if f
             for x in client.files.content(f).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"req-{i}" for i in range(4)]
    sync = real_service.request("POST", "/v1/judge/pairwise", {"pairs": REAL})[1]["results"]
    for line in lines:
        index = int(line["custom_id"].split("-")[1])
        result = line["response"]["body"]["results"][0]
        assert result["label"] == sync[index]["label"] or abs((sync[index]["p_response_1"] or 0.5) - 0.5) < 2e-3
        if result["p_response_1"] is not None:
            assert result["p_response_1"] == pytest.approx(sync[index]["p_response_1"], abs=2e-3)


@pytest.mark.vllm
def test_sigkill_mid_batch_then_restart_finishes_with_no_label_lost_or_doubled(tmp_path):
    pairs = [{"prompt": f"Give one word for a happy feeling ({i}).", "response_1": f"Joy {i}.",
              "response_2": f"Sadness is not it, {i}."} for i in range(24)]
    server = Server(tmp_path / "svc", ["smollm2-pairwise"], KEYS, extra=["--batch-size", "4"]).start()
    try:
        client = _openai(server)
        upload = client.files.create(file=("kill.jsonl", io.BytesIO(_lines(pairs).encode())), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
        # One chunk (24 pairs): its run folder records the judgments as they are made; finalizing merges it.
        judgments = tmp_path / "svc" / "batches" / batch.id / "chunks" / "000001" / "judgments.jsonl"
        deadline = time.monotonic() + 600
        while not (judgments.exists() and sum(1 for _ in judgments.open()) >= 4):
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
        server.kill()
        judged_before = sum(1 for _ in judgments.open())
        assert judged_before < 24, "killed mid-batch"
        server.start()
        assert client.batches.retrieve(batch.id).status in ("in_progress", "finalizing", "completed")
        done = _wait(client, batch.id)
        lines = [json.loads(x) for f in (done.output_file_id, done.error_file_id) if f
                 for x in client.files.content(f).text.splitlines()]
    finally:
        server.stop()
    assert done.status == "completed" and done.request_counts.total == 24
    assert sorted(x["custom_id"] for x in lines) == sorted(f"req-{i}" for i in range(24)), "each request exactly once"
    keys = [json.loads(line)["key"] for line in judgments.open()]
    assert len(keys) == len(set(keys)) == 24, "every pair judged once: nothing redone, nothing written twice"
    merged = judgments.parents[2] / "judgments.jsonl"
    assert sorted(json.loads(line)["key"] for line in merged.open()) == sorted(keys)
    rows = [json.loads(line)["pair_id"] for line in (merged.parent / "preferences.jsonl").open()]
    assert len(rows) == len(set(rows)) == done.request_counts.completed
    assert "killed" not in server.tail()


def test_openrlhf_get_reward_shape_on_the_fake_judge(fake_server):
    prompt = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    status, reply, _ = fake_server.request("POST", "/get_reward", {
        "query": [prompt + "4<|im_end|>", prompt + "5<|im_end|>", prompt + "<|im_end|>"], "prompts": [prompt] * 3,
        "labels": ["5", None, "4"]})
    assert status == 200, reply
    assert reply["judge"] == "fake-pairwise", "one reference given: every row is judged pairwise, none pointwise"
    assert 0 <= reply["rewards"][0] <= 1 and reply["reasons"][0] is None
    assert reply["rewards"][1] is None and reply["reasons"][1] == "no reference response"
    assert reply["rewards"][2] is None and reply["reasons"][2] == "empty completion", "end-of-turn tokens are cut"
    assert reply["scores"] == reply["rewards"]
    status, plain, _ = fake_server.request("POST", "/get_reward", {"query": [prompt + "4"], "prompts": [prompt]})
    assert status == 200 and plain["judge"] == "fake-pointwise"
    status, bad, _ = fake_server.request("POST", "/get_reward", {"query": ["abc"], "prompts": ["xyz"]})
    assert status == 422 and bad["error"]["code"] == "query_prompt_mismatch"
    status, bad, _ = fake_server.request("POST", "/get_reward", {"query": ["abc"]})
    assert status == 422 and bad["error"]["code"] == "prompts_required"


def test_clients_split_into_two_groups_are_merged_into_one_engine_call():
    """Two equal groups of clients in step, each sending while the other's call runs, would alternate between two
    half-size calls forever; after a long call the worker waits a moment for the clients it just answered."""
    from rlaif.backends import Choice, Completion, CompletionRequest, FakeBackend
    from rlaif.records import Message
    from rlaif.service.engines import EngineWorker

    sizes: list[int] = []
    call_started = threading.Semaphore(0)

    class Slow(FakeBackend):
        def complete(self, requests):
            sizes.append(len(requests))
            call_started.release()
            time.sleep(0.3)
            return super().complete(requests)

    worker = EngineWorker(Slow(lambda r: Completion(choices=[Choice(text="A")])), max_requests=64)

    def ask(i: int, times: int) -> None:
        for _ in range(times):
            worker.submit([CompletionRequest(messages=[Message(role="user", content=f"c{i}")])], bulk=False)

    blocker = threading.Thread(target=ask, args=(-1, 1))
    group_a = [threading.Thread(target=ask, args=(i, 6)) for i in range(4)]
    group_b = [threading.Thread(target=ask, args=(i, 6)) for i in range(4, 8)]
    blocker.start()
    assert call_started.acquire(timeout=10)
    for t in group_a:  # queued behind the blocker's call
        t.start()
    assert call_started.acquire(timeout=10)
    for t in group_b:  # queued behind group A's call
        t.start()
    for t in [blocker, *group_a, *group_b]:
        t.join(timeout=60)
    worker.close()
    assert sizes[:2] == [1, 4], sizes
    assert 8 in sizes, f"the two groups never met in one call: {sizes}"
