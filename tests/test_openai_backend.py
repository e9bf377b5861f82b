"""The OpenAI-compatible backend.

Logic tests (fast) run it against a tiny local stub server, directly or behind the fault proxy, to check
request mapping, response parsing, retry classification, waits, budgets and key handling. The `vllm`
tests run the real vLLM OpenAI-compatible server on the embedded model: the same judge must give the same
labels through it as through the in-process engine, also with faults injected between client and server.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from faultproxy import FaultProxy

from rlaif.backends import SharedBackend, open_backend
from rlaif.backends.base import CompletionRequest
from rlaif.backends.openai_backend import OpenAIBackend
from rlaif.config import OpenAIBackendConfig
from rlaif.errors import BackendError
from rlaif.records import Message

SECRET = "sk-test-0123456789abcdef"


def chat_response(top=(("A", -0.1), ("B", -2.5)), text="A", n=1, usage=(12, 1)) -> dict:
    entry = {"token": text, "logprob": top[0][1], "bytes": None,
             "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}
    choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "length",
                "logprobs": {"content": [entry]}} for i in range(n)]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stub", "choices": choices,
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


class StubServer:
    """A chat-completions server answering with `responder(body, headers) -> (status, body, headers)`."""

    def __init__(self, responder=lambda body, headers: (200, chat_response(), {})):
        self.responder, self.requests = responder, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append((body, {k.lower(): v for k, v in self.headers.items()}))
                status, payload, headers = stub.responder(body, stub.requests[-1][1])
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def make_config(base_url: str, **overrides) -> OpenAIBackendConfig:
    fields = dict(kind="openai", model="stub-model", base_url=f"{base_url}/v1", api_key_env=None, max_concurrency=2,
                  timeout_s=5, max_attempts=6, item_budget_s=60, backoff_initial_s=0.01, backoff_max_s=0.05)
    return OpenAIBackendConfig(**{**fields, **overrides})


def request(**overrides) -> CompletionRequest:
    fields = dict(messages=[Message(role="user", content="Which is better?")], top_logprobs=5)
    return CompletionRequest(**{**fields, **overrides})


class SleepRecorder:
    """Stands in for time.sleep: records the waits instead of waiting."""

    def __init__(self):
        self.waits = []

    def __call__(self, seconds):
        self.waits.append(seconds)


# --- request and response mapping ---------------------------------------------------------------------------


def test_request_fields_are_mapped(stub):
    backend = OpenAIBackend(make_config(stub.url, extra_body={"top_k": 5}))
    backend.complete([request(max_tokens=3, temperature=0.7, top_p=0.9, n=2, seed=11, stop=["\n"])])
    body = stub.requests[-1][0]
    assert body["model"] == "stub-model" and body["messages"] == [{"role": "user", "content": "Which is better?"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["n"], body["seed"], body["stop"]) == (3, 0.7, 0.9, 2, 11, ["\n"])
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and body["top_k"] == 5
    assert "continue_final_message" not in body
    backend.complete([request(continue_final=True)])
    body = stub.requests[-1][0]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False and body["top_k"] == 5


def test_logprobs_not_asked_when_the_config_says_no(stub):
    OpenAIBackend(make_config(stub.url, logprobs=False)).complete([request()])
    assert "logprobs" not in stub.requests[-1][0] and "top_logprobs" not in stub.requests[-1][0]
    OpenAIBackend(make_config(stub.url)).complete([request(top_logprobs=0)])
    assert "logprobs" not in stub.requests[-1][0]


def test_response_parsing_usage_cost_and_duplicate_tokens():
    server = StubServer(lambda b, h: (200, chat_response(top=(("A", -1.0), (" A", -2.0), ("A", -2.5), ("B", -3.0)), usage=(1000, 2)), {}))
    try:
        config = make_config(server.url, usd_per_million_input_tokens=2.0, usd_per_million_output_tokens=8.0)
        [completion] = OpenAIBackend(config).complete([request()])
    finally:
        server.close()
    assert completion.error is None and completion.prompt_tokens == 1000 and completion.completion_tokens == 2
    assert math.isclose(completion.cost_usd, (1000 * 2.0 + 2 * 8.0) / 1e6)
    [choice] = completion.choices
    assert choice.text == "A" and choice.finish_reason == "length"
    position = choice.logprobs[0]
    assert math.isclose(position["A"], math.log(math.exp(-1.0) + math.exp(-2.5)))  # same string: summed
    assert position[" A"] == -2.0 and position["B"] == -3.0
    assert completion.latency_s > 0


def test_open_backend_opens_openai(stub):
    backend = open_backend(make_config(stub.url))
    assert isinstance(backend, OpenAIBackend) and backend.name == "openai" and backend.model == "stub-model"
    backend.close()


# --- keys ---------------------------------------------------------------------------------------------------


def test_key_is_sent_but_never_shown(stub, monkeypatch):
    monkeypatch.setenv("RLAIF_TEST_KEY", SECRET)
    config = make_config(stub.url, api_key_env="RLAIF_TEST_KEY")
    backend = OpenAIBackend(config)
    backend.complete([request()])
    assert stub.requests[-1][1]["authorization"] == f"Bearer {SECRET}"
    shown = [repr(backend), repr(config), config.model_dump_json(), backend.stats().model_dump_json()]
    assert all(SECRET not in text for text in shown) and "RLAIF_TEST_KEY" in repr(backend)
    # A server that echoes the key in an error body: the key is scrubbed from the recorded error.
    stub.responder = lambda b, h: (400, {"error": {"message": f"bad key {h['authorization']}"}}, {})
    [completion] = backend.complete([request()])
    assert "400" in completion.error and "***" in completion.error and SECRET not in completion.error


def test_missing_key_variable_is_a_clear_error(stub, monkeypatch):
    monkeypatch.delenv("RLAIF_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="RLAIF_NO_SUCH_KEY"):
        OpenAIBackend(make_config(stub.url, api_key_env="RLAIF_NO_SUCH_KEY"))


# --- retries ------------------------------------------------------------------------------------------------


def test_each_fault_kind_is_retried_and_counted(stub):
    """One request meets every fault once, in turn, and succeeds on its sixth attempt."""
    schedule = ["rate_limit", "server_error", "stall", "cut", "malformed", "ok"]
    with FaultProxy(stub.url, schedule, stall_s=2.0) as proxy:
        sleep = SleepRecorder()
        backend = OpenAIBackend(make_config(proxy.url, timeout_s=0.5, max_concurrency=1), sleep=sleep)
        [completion] = backend.complete([request()])
    assert completion.error is None and completion.choices[0].logprobs[0]["A"] == -0.1
    assert proxy.injected == Counter(rate_limit=1, server_error=1, stall=1, cut=1, malformed=1)
    stats = backend.stats().model_dump()
    assert stats["retries"] == {"rate_limit": 1, "server_error": 1, "timeout": 1, "connection": 1, "malformed": 1}
    assert stats["attempts"] == 6 and stats["succeeded"] == 1 and stats["failed"] == 0 and stats["failures"] == {}
    assert sleep.waits[0] == 1.0, "the 429's Retry-After: 1 is the wait"
    assert all(0 < w <= 0.05 for w in sleep.waits[1:]), "the others back off within backoff_max_s"


def test_retry_after_is_honoured_over_backoff():
    calls = []

    def responder(body, headers):
        calls.append(1)
        return (429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}) if len(calls) < 3 else (200, chat_response(), {})

    server = StubServer(responder)
    try:
        sleep = SleepRecorder()
        [completion] = OpenAIBackend(make_config(server.url), sleep=sleep).complete([request()])
    finally:
        server.close()
    assert completion.error is None and sleep.waits == [3.0, 3.0]


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_not_retried(status):
    server = StubServer(lambda b, h: (status, {"error": {"message": "you asked for something impossible"}}, {}))
    try:
        sleep = SleepRecorder()
        backend = OpenAIBackend(make_config(server.url), sleep=sleep)
        [completion] = backend.complete([request()])
    finally:
        server.close()
    assert completion.choices == [] and str(status) in completion.error and "not retried" in completion.error
    assert "you asked for something impossible" in completion.error
    assert len(server.requests) == 1 and sleep.waits == []
    assert backend.stats().failures == {"client_error": 1} and backend.stats().retries == {}


def test_attempts_run_out_into_an_error_completion():
    server = StubServer(lambda b, h: (503, {"error": {"message": "overloaded"}}, {}))
    try:
        backend = OpenAIBackend(make_config(server.url, max_attempts=3), sleep=SleepRecorder())
        completions = backend.complete([request(), request()])
    finally:
        server.close()
    for completion in completions:
        assert completion.choices == []
        assert completion.error.startswith("gave up after 3 attempts in ") and "(max_attempts used up): last error 503" in completion.error
    assert len(server.requests) == 6
    assert backend.stats().retries == {"server_error": 4} and backend.stats().failures == {"server_error": 2}


def test_budget_runs_out_into_an_error_completion():
    server = StubServer(lambda b, h: (500, {"error": {"message": "boom"}}, {}))
    try:
        config = make_config(server.url, max_attempts=1000, item_budget_s=0.5, backoff_initial_s=0.1, backoff_max_s=0.1)
        backend = OpenAIBackend(config)  # real sleeps: the budget is wall time
        [completion] = backend.complete([request()])
    finally:
        server.close()
    assert "item_budget_s 0.5 used up" in completion.error and "last error 500" in completion.error
    assert 1 < len(server.requests) < 1000


def test_retry_after_beyond_the_budget_gives_up_at_once():
    server = StubServer(lambda b, h: (429, {"error": {"message": "quota"}}, {"Retry-After": "100"}))
    try:
        sleep = SleepRecorder()
        [completion] = OpenAIBackend(make_config(server.url, item_budget_s=10), sleep=sleep).complete([request()])
    finally:
        server.close()
    assert sleep.waits == [] and len(server.requests) == 1
    assert completion.error.startswith("gave up after 1 attempt in ")
    assert "Retry-After is beyond the item_budget_s 10): last error 429 rate limited (Retry-After 100 s): quota" in completion.error


@pytest.mark.parametrize("payload", [
    b'{"id": "x", "object": "chat.completion", "choices": []}',
    b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}, "logprobs": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": [{"token": "A", "logprob": "high"}]}]}}]}',
    b"<html>bad gateway</html>",
])
def test_malformed_bodies_are_retried(payload):
    calls = []

    def responder(body, headers):
        calls.append(1)
        if len(calls) == 1:
            return 200, payload, ({"Content-Type": "text/html"} if payload.startswith(b"<") else {})
        return 200, chat_response(), {}

    server = StubServer(responder)
    try:
        backend = OpenAIBackend(make_config(server.url), sleep=SleepRecorder())
        [completion] = backend.complete([request()])
    finally:
        server.close()
    assert completion.error is None and backend.stats().retries == {"malformed": 1}


def test_label_stage_reports_backend_stats(tmp_path):
    from rlaif.config import load_judge_config
    from rlaif.records import CandidatePair
    from rlaif.stages.label import label_stage
    from rlaif.store.runfolder import RunFolder

    def prefers_yes(body, headers):  # a consistent judge: the response "Yes." wins in either order
        yes_first = "[BEGIN RESPONSE A]\nYes." in body["messages"][-1]["content"]
        return 200, chat_response(top=(("A", -0.2), ("B", -1.7)) if yes_first else (("B", -0.2), ("A", -1.7))), {}

    server = StubServer(prefers_yes)
    try:
        with FaultProxy(server.url, ["ok", "server_error", "ok"]) as proxy:
            judge = load_judge_config("smollm2-pairwise-api")
            judge = judge.model_copy(update={"backend": make_config(proxy.url, model="smollm2-135m-instruct")})
            pairs = [CandidatePair(id=f"p{i}", prompt=f"Question {i}?", response_1="Yes.", response_2="No.") for i in range(3)]
            summary = label_stage(pairs, judge, SharedBackend(OpenAIBackend(judge.backend)), RunFolder(tmp_path), batch_size=2, progress=False)
    finally:
        server.close()
    stats = summary["backend_stats"]
    assert stats["requests"] == 6 and stats["retries"] == {"server_error": proxy.injected["server_error"]} and stats["retries"]
    assert summary["labeled"] == 3 and summary["unlabeled"] == 0
    rows = [json.loads(line) for line in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    assert all(row["chosen_is_response_1"] for row in rows)
    assert json.loads((tmp_path / "manifest.json").read_text())["backend_stats"] == stats


# --- the real vLLM server on the embedded model -------------------------------------------------------------

# (prompt id in prompts/sets/instructions-v1.jsonl, a good response, a poor one, a terse one)
HANDWRITTEN = [
    ("inst-001", "Hi Sam, would you mind if we moved Thursday's meeting to Friday, same time? Thanks a lot! Best, Alex",
     "Meeting bad. Friday.", "Move meeting to Friday pls."),
    ("inst-002", "Crimson leaves let go,\nthey drift on the cooling wind,\ngold carpets the path,\nautumn hums its soft goodbye.",
     "Leaves are a part of a plant that does photosynthesis.", "Leaves fall down. Autumn."),
    ("inst-003", "1. Rise & Shine Sourdough\n2. The Wild Yeast\n3. Crust Issues", "Bakery.", "Bread Place"),
    ("inst-004", "We need to resolve this defect as soon as possible.", "Hey, fix the bug now, ok?", "Fix the bug soon."),
    ("inst-005", "Stay refreshed anywhere with our insulated steel bottle: it keeps drinks cold for 24 hours, is leak-proof and replaces hundreds of plastic bottles.",
     "It is a bottle.", "A bottle that you can use again."),
    ("inst-006", "Cinderella, mistreated by her stepfamily, attends the royal ball with help from her fairy godmother and wins the prince's heart. She flees at midnight, and the prince finds her again with the glass slipper she left behind.",
     "Cinderella is a movie about cars.", "A girl goes to a ball."),
    ("inst-007", "Keep a fixed bedtime, avoid screens and caffeine in the evening, and keep your bedroom dark and cool.",
     "Just drink more coffee in the morning.", "Go to bed earlier."),
    ("inst-008", "Plan meals for the week, shop with a list, buy store brands and seasonal produce, and avoid shopping hungry.",
     "Buy only the most expensive items to get quality.", "Use coupons."),
    ("inst-009", "Research the company, prepare answers to common questions, pick your outfit, and get a good night's sleep.",
     "Stay up all night playing games to relax.", "Read about the company."),
    ("inst-010", "Thank them warmly for the invitation, say you can't make it this time, and wish them a great party.",
     "Just ignore the message.", "Say no thanks."),
]


def real_pairs():
    from rlaif.records import CandidatePair
    from rlaif.resources import resolve_resource

    lines = resolve_resource("sets/instructions-v1.jsonl", "prompts", suffix=".jsonl").read_text().splitlines()
    prompts = {row["id"]: row["prompt"] for row in map(json.loads, lines)}
    pairs = []
    for pid, good, poor, terse in HANDWRITTEN:
        pairs.append(CandidatePair(id=f"{pid}-good-poor", prompt=prompts[pid], response_1=good, response_2=poor))
        pairs.append(CandidatePair(id=f"{pid}-terse-good", prompt=prompts[pid], response_1=terse, response_2=good))
    return pairs


def api_judge_config(base_url: str, **backend):
    from rlaif.config import load_judge_config

    config = load_judge_config("smollm2-pairwise-api")
    return config.model_copy(update={"backend": config.backend.model_copy(update={"base_url": base_url, **backend})})


TOLERANCE = 0.02
FAULT_KIND = {"rate_limit": "rate_limit", "server_error": "server_error", "cut": "connection", "malformed": "malformed"}


@pytest.fixture(scope="module")
def server_labels(vllm_server):
    """The no-fault labels: every real pair judged straight through the server."""
    from rlaif.judging.pairwise import PairwiseJudge

    config = api_judge_config(vllm_server.url)
    with OpenAIBackend(config.backend) as backend:
        judgments = PairwiseJudge(config, backend).judge(real_pairs())
        assert backend.stats().retries == {} and backend.stats().failed == 0
    return {j.pair_id: j for j in judgments}


@pytest.mark.vllm
def test_server_and_in_process_engine_agree(vllm_backend, judge_config, server_labels, vllm_server):
    from rlaif.judging.pairwise import PairwiseJudge

    pairs = real_pairs()[:6]
    local = {j.pair_id: j for j in PairwiseJudge(judge_config, vllm_backend).judge(pairs)}
    diffs = []
    for pair in pairs:
        a, b = local[pair.id], server_labels[pair.id]
        assert a.principle_ids == b.principle_ids and b.backend == "openai" and a.backend == "vllm"
        assert a.labeled == b.labeled, (pair.id, a.reason, b.reason)
        assert b.prompt_tokens == a.prompt_tokens, "the server rendered the same chat template"
        if a.labeled:
            diffs.append(abs(a.p_first - b.p_first))
            assert diffs[-1] <= TOLERANCE, (pair.id, a.p_first, b.p_first)
            if abs(a.p_first - 0.5) > TOLERANCE:
                assert (a.p_first > 0.5) == (b.p_first > 0.5)
    assert diffs, "at least one pair must be labeled for the comparison to mean anything"
    print(f"\nserver start {vllm_server.start_s:.1f} s; max |p_first diff| in-process vs server over "
          f"{len(diffs)} labeled pairs: {max(diffs):.2e}")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.vllm
def test_labeling_through_faults_matches_the_fault_free_labels(vllm_server, server_labels, tmp_path):
    from rlaif.stages.label import label_stage
    from rlaif.store.runfolder import RunFolder

    pairs, run = real_pairs(), RunFolder(tmp_path)
    schedule = ["ok", "rate_limit", "ok", "server_error", "ok", "ok", "cut", "ok", "malformed", "ok", "stall", "ok"]
    with FaultProxy(vllm_server.url.removesuffix("/v1"), schedule, stall_s=12) as proxy:
        config = api_judge_config(f"{proxy.url}/v1", timeout_s=6, max_concurrency=2, item_budget_s=120,
                                  backoff_initial_s=0.2, backoff_max_s=2)
        with OpenAIBackend(config.backend) as backend:
            first = label_stage(pairs, config, SharedBackend(backend), run, batch_size=8, progress=False)
        injected = Counter(proxy.injected)
        lines_after_first = len(_rows(tmp_path / "judgments.jsonl"))

        # every pair ends labeled, or unlabeled with its reason; each is recorded once
        assert first["labeled"] + first["unlabeled"] == len(pairs) and lines_after_first == len(pairs)
        assert all(u["reason"] for u in _rows(tmp_path / "unlabeled.jsonl"))
        # the labels that came through equal the fault-free ones
        for row in _rows(tmp_path / "preferences.jsonl"):
            reference = server_labels[row["pair_id"]]
            assert reference.labeled and abs(row["p_response_1"] - reference.p_first) <= TOLERANCE, row["pair_id"]
        # the backend counted, by kind, the faults the proxy injected
        stats = first["backend_stats"]
        counted = Counter(stats["retries"]) + Counter(stats["failures"])
        assert all(injected[fault] > 0 for fault in FAULT_KIND) and injected["stall"] > 0, injected
        for fault, kind in FAULT_KIND.items():
            assert counted[kind] == injected[fault], (fault, injected, stats)
        assert counted["timeout"] >= injected["stall"], "a stall past timeout_s is a timeout (a slow machine may add more)"
        assert set(counted) <= set(FAULT_KIND.values()) | {"timeout", "budget"}, stats

        # a rerun into the same folder redoes only what is unlabeled
        with OpenAIBackend(config.backend) as again_backend:
            again = label_stage(pairs, config, SharedBackend(again_backend), run, batch_size=8, progress=False)
            assert again_backend.stats().requests == 2 * first["unlabeled"]
    assert again["reused_from_earlier_runs"] == first["labeled"] and again["judged_now"] == first["unlabeled"]
    judgments = _rows(tmp_path / "judgments.jsonl")
    assert len(judgments) == lines_after_first + first["unlabeled"]
    by_key = {}
    for row in judgments:
        by_key.setdefault(row["key"], []).append(row)
    for rows in by_key.values():  # a key recurs only as a retry of an unlabeled judgment
        assert all(r["p_first"] is None for r in rows[:-1])
    preferences = _rows(tmp_path / "preferences.jsonl")
    assert len({r["pair_id"] for r in preferences}) == len(preferences) == again["labeled"]
    assert again["labeled"] + again["unlabeled"] == len(pairs)
    print(f"\nfaults injected {dict(injected)}; backend retries {stats['retries']}, failures {stats['failures']}, "
          f"attempts {stats['attempts']} for {stats['requests']} requests; labeled {first['labeled']}/{len(pairs)}, "
          f"after rerun {again['labeled']}/{len(pairs)}")


@pytest.mark.vllm
def test_server_without_logprobs_falls_back_to_the_written_verdict(vllm_server):
    """A server that returns no logprobs (here: none asked for) still gets verdicts with `parser: auto`, read from
    the reply and recorded as hard text verdicts; a reply without a verdict letter is unlabeled with the reason."""
    from rlaif.judging.pairwise import PairwiseJudge

    config = api_judge_config(vllm_server.url, logprobs=False)
    config = config.model_copy(update={"verdict": config.verdict.model_copy(update={"parser": "auto"})})
    with OpenAIBackend(config.backend) as backend:
        judgments = PairwiseJudge(config, backend).judge(real_pairs()[:4])
    orders = [o for j in judgments for pv in j.per_principle for o in pv.orders]
    assert len(orders) == 8 and all(not o.top_logprobs for o in orders), "no logprobs were asked for"
    read = [o for o in orders if not o.error]
    assert read, "the 135M judge's short replies start with a verdict letter often enough for some readings"
    assert all(o.parsed_from == "text" and o.p_first in (0.0, 1.0) and o.text_verdict in ("A", "B") for o in read)
    assert all(o.error and o.raw_output is not None for o in orders if o not in read)
    for j in judgments:
        assert j.labeled or j.reason
