"""A fleet of OpenAI-compatible servers behind one backend (`base_urls`).

Fast tests run tiny local stub servers (some behind the fault proxy, some dying mid-run) and check exactly
where each request went: spread over the healthy servers, failed over at once (no backoff wait) when one
drops connections, times out or rate-limits, and an error only when every server failed the request. The
`vllm` test puts two proxies in front of the real vLLM server on the embedded model, stops one mid-run, and
checks that every pair still gets the label it gets without faults.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import yaml
from faultproxy import FaultProxy
from test_openai_backend import SleepRecorder, StubServer, real_pairs, request

from rlaif.backends.base import BackendStats
from rlaif.backends.openai_backend import AttemptError, OpenAIBackend, ServerFleet
from rlaif.config import OpenAIBackendConfig, load_judge_config
from rlaif.errors import ConfigError
from rlaif.resources import resolve_resource


def fleet_config(urls: list[str], **overrides) -> OpenAIBackendConfig:
    fields = dict(kind="openai", model="stub-model", base_urls=[f"{u}/v1" for u in urls], api_key_env=None,
                  max_concurrency=1, timeout_s=5, max_attempts=6, item_budget_s=60, backoff_initial_s=0.01,
                  backoff_max_s=0.05, server_cooldown_s=600)
    return OpenAIBackendConfig(**{**fields, **overrides})


class DyingProxy(FaultProxy):
    """Forwards its first `answers` POSTs, then goes away: it stops listening (later connections are refused)
    and cuts any request that got in while it was shutting down. A server that dies mid-run."""

    def __init__(self, upstream: str, answers: int):
        super().__init__(upstream, ["ok"])
        self.answers = answers
        self.dying = threading.Thread(target=self.stop, daemon=True)

    def next_action(self, method: str) -> str:
        with self._lock:
            if method != "POST":
                return "ok"
            self._posts += 1
            if self._posts > self.answers:
                self.injected["cut"] += 1
                return "cut"
            self.forwarded += 1
            if self._posts == self.answers:
                self.dying.start()  # the last answer still goes out: its connection is already open
            return "ok"


@pytest.fixture
def stubs():
    servers = [StubServer() for _ in range(3)]
    yield servers
    for server in servers:
        server.close()


def refused_url() -> str:
    """The address of a server that has gone: nothing listens there."""
    gone = StubServer()
    gone.close()
    return gone.url


# --- config -------------------------------------------------------------------------------------------------


def test_config_takes_one_server_or_a_list():
    one = OpenAIBackendConfig(kind="openai", model="m", base_url="http://a/v1", api_key_env=None)
    many = OpenAIBackendConfig(kind="openai", model="m", base_urls=["http://a/v1", "http://b/v1"], api_key_env=None)
    assert one.urls == ["http://a/v1"] and many.urls == ["http://a/v1", "http://b/v1"]
    assert OpenAIBackendConfig.model_validate(many.model_dump()) == many
    with OpenAIBackend(many) as fleet, OpenAIBackend(one) as single:
        assert "base_urls=['http://a/v1', 'http://b/v1']" in repr(fleet) and "base_url='http://a/v1'" in repr(single)
    for bad, words in [({}, "exactly one of base_url"), ({"base_url": "http://a/v1", "base_urls": ["http://b/v1"]}, "exactly one of base_url"),
                       ({"base_urls": []}, "at least 1 item"), ({"base_urls": ["http://a/v1", "http://a/v1/"]}, "more than once: http://a/v1")]:
        with pytest.raises(ValueError, match=words):
            OpenAIBackendConfig(kind="openai", model="m", **bad)


def test_shipped_fleet_judge_loads_and_a_broken_one_is_a_clear_error(tmp_path):
    judge = load_judge_config("smollm2-pairwise-fleet")
    assert judge.backend.kind == "openai" and len(judge.backend.urls) == 2 and judge.backend.base_url is None
    api = load_judge_config("smollm2-pairwise-api")
    assert judge.backend.model == api.backend.model and judge.template == api.template and judge.verdict == api.verdict
    data = yaml.safe_load(resolve_resource("smollm2-pairwise-fleet", "judges").read_text())
    data["backend"]["base_url"] = "http://127.0.0.1:8000/v1"  # and base_urls: both
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"backend: Value error, give exactly one of base_url \(one server\) or base_urls"):
        load_judge_config(broken)


def test_stats_keep_per_server_counts():
    before = BackendStats(requests=2, succeeded=2, servers={"a": 2})
    after = BackendStats(requests=5, succeeded=5, servers={"a": 3, "b": 2})
    assert after.since(before).servers == {"a": 1, "b": 2}
    assert (before + after).servers == {"a": 5, "b": 2}


def test_summary_line_shows_what_each_server_answered(capsys):
    from rlaif.cli.common import print_summary

    stats = BackendStats(requests=3, attempts=4, succeeded=3, retries={"connection": 1}, servers={"http://a/v1": 1, "http://b/v1": 2})
    print_summary({"labeled": 3, "backend_stats": stats.model_dump()}, "label")
    line = next(x for x in capsys.readouterr().out.splitlines() if "backend attempts" in x)
    assert "retries: connection 1" in line and "http://a/v1 answered 1" in line and "http://b/v1 answered 2" in line


# --- picking servers ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_fleet_picks_least_busy_in_turn_and_cools_failed_servers_down():
    clock = Clock()
    fleet = ServerFleet(["a", "b", "c"], make_client=lambda url: url, cooldown_s=10, clock=clock)
    taken = []
    for _ in range(6):  # one at a time: strictly in turn
        server = fleet.take()
        taken.append(server.url)
        fleet.give_back(server, None)
    assert taken == ["a", "b", "c", "a", "b", "c"]
    busy = [fleet.take() for _ in range(3)]  # all held: each goes to the least busy server
    assert sorted(s.url for s in busy) == ["a", "b", "c"] and all(s.in_flight == 1 for s in fleet.servers)
    for server in busy:
        fleet.give_back(server, None)

    a = fleet.take(["b", "c"])  # a request that failed on b and c goes to a, which fails too
    assert a.url == "a"
    fleet.give_back(a, AttemptError("connection", "connection error", True))
    assert a.down_until == 10
    assert {fleet.take().url for _ in range(4)} == {"b", "c"}, "a cooling-down server is skipped"
    assert fleet.can_fail_over(["a", "b"]) and not fleet.can_fail_over(["a", "b", "c"])
    assert fleet.take(["b", "c"]).url in ("b", "c"), "a healthy server beats one that is cooling down"
    clock.now = 10
    assert fleet.can_fail_over(["b", "c"]) and fleet.take(["b", "c"]).url == "a", "after the cool-down it is tried again"


def test_fleet_sends_a_retry_to_a_server_the_request_has_not_failed_on():
    fleet = ServerFleet(["a", "b"], make_client=lambda url: url, cooldown_s=10, clock=Clock())
    assert fleet.take(["a"]).url == "b", "a is next in turn, but this request failed on it"
    assert fleet.take(["a"]).url == "b", "even though b is now the busier one"
    assert fleet.take(["a", "b"]).url == "a", "failed on both (neither cooling down): the least busy"


def test_fleet_with_every_server_down_tries_the_one_back_soonest():
    clock = Clock()
    fleet = ServerFleet(["a", "b"], make_client=lambda url: url, cooldown_s=10, clock=clock)
    a, b = fleet.servers
    fleet.give_back(fleet.take(), AttemptError("server_error", "503", True))  # a: down until 10
    clock.now = 3
    fleet.give_back(fleet.take(), AttemptError("rate_limit", "429", True, retry_after=2.0))  # b: Retry-After 2 s
    assert (a.down_until, b.down_until) == (10, 5)
    assert not fleet.can_fail_over([]) and fleet.take().url == "b"
    fleet.give_back(b, None)
    assert b.down_until < 0 and fleet.take().url == "b", "an answer makes a server healthy again"
    fleet.give_back(fleet.take(["b"]), AttemptError("malformed", "bad json", True))
    assert b.down_until < 0, "a malformed body says nothing about the server's health"


# --- the backend over stub servers --------------------------------------------------------------------------


def test_requests_are_spread_over_every_server(stubs):
    backend = OpenAIBackend(fleet_config([s.url for s in stubs]))
    completions = backend.complete([request() for _ in range(12)])
    assert all(c.error is None and c.choices[0].text == "A" for c in completions)
    assert [len(s.requests) for s in stubs] == [4, 4, 4], "one at a time, the servers take turns"
    stats = backend.stats()
    assert stats.servers == {f"{s.url}/v1": 4 for s in stubs} and stats.retries == {} and stats.attempts == 12


def test_a_server_that_drops_connections_fails_over_at_once(stubs):
    with FaultProxy(stubs[0].url, ["cut"]) as dead:
        sleep = SleepRecorder()
        backend = OpenAIBackend(fleet_config([dead.url, stubs[1].url]), sleep=sleep)
        completions = backend.complete([request() for _ in range(8)])
    assert all(c.error is None for c in completions)
    assert dead.injected == Counter(cut=1) and len(stubs[0].requests) == 0, "tried once, then cooled down"
    assert len(stubs[1].requests) == 8
    stats = backend.stats()
    assert stats.retries == {"connection": 1} and stats.attempts == 9 and stats.failed == 0
    assert stats.servers == {f"{stubs[1].url}/v1": 8}
    assert sleep.waits == [0.0], "failing over to a healthy server waits no backoff"


def test_a_rate_limited_server_hands_its_request_to_another(stubs):
    stubs[0].responder = lambda b, h: (429, {"error": {"message": "slow down"}}, {"Retry-After": "30"})
    sleep = SleepRecorder()
    backend = OpenAIBackend(fleet_config([s.url for s in stubs[:2]]), sleep=sleep)
    completions = backend.complete([request() for _ in range(4)])
    assert all(c.error is None for c in completions)
    assert len(stubs[0].requests) == 1 and len(stubs[1].requests) == 4
    assert backend.stats().retries == {"rate_limit": 1} and sleep.waits == [0.0], "no 30 s Retry-After wait"


def test_a_server_dying_mid_run_loses_nothing(stubs):
    """Concurrent requests over two live servers and one that refuses connections; one live server dies after
    answering 5. Every request is answered, each exactly once, and the counts add up."""
    with DyingProxy(stubs[0].url, answers=5) as dying:
        sleep = SleepRecorder()
        urls = [dying.url, refused_url(), stubs[1].url]
        backend = OpenAIBackend(fleet_config(urls, max_concurrency=6), sleep=sleep)
        completions = backend.complete([request() for _ in range(60)])
        dying.dying.join(10)
    assert all(c.error is None and c.choices for c in completions)
    stats = backend.stats()
    assert stats.succeeded == stats.requests == 60 and stats.failed == 0
    assert stats.servers == {f"{dying.url}/v1": 5, f"{stubs[1].url}/v1": 55}
    assert len(stubs[0].requests) == dying.forwarded == 5, "the dead server's count stopped at 5"
    assert len(stubs[1].requests) == 55, "no request answered twice"
    assert set(stats.retries) == {"connection"} and stats.attempts == 60 + stats.retries["connection"]
    assert len(sleep.waits) == stats.retries["connection"] and set(sleep.waits) == {0.0}, "every retry failed over at once"


def test_a_request_fails_only_when_every_server_failed_it(stubs):
    stubs[0].responder = lambda b, h: (503, {"error": {"message": "overloaded"}}, {})
    with FaultProxy(stubs[1].url, ["cut"]) as cutting:
        sleep = SleepRecorder()
        backend = OpenAIBackend(fleet_config([stubs[0].url, cutting.url], max_attempts=4), sleep=sleep)
        completions = backend.complete([request(), request()])
    for completion in completions:
        assert completion.choices == [] and completion.error.startswith("gave up after 4 attempts in ")
        assert "(max_attempts used up): last error" in completion.error and "(last server http://127.0.0.1:" in completion.error
    assert len(stubs[0].requests) + cutting.injected["cut"] == 8
    assert stubs[0].requests and cutting.injected["cut"], "both servers were tried"
    stats = backend.stats()
    assert stats.failed == 2 and stats.servers == {} and sum(stats.failures.values()) == 2
    assert sleep.waits[0] == 0.0 and max(sleep.waits) > 0, "fail over at once, back off once every server failed"


# --- the real vLLM server behind two proxies ----------------------------------------------------------------

TOLERANCE = 0.02


@pytest.mark.vllm
def test_fleet_finishes_with_nothing_lost_when_a_server_dies(vllm_server):
    from rlaif.judging.pairwise import PairwiseJudge

    pairs = real_pairs()  # 20 pairs, both orders: 40 requests
    fleet = load_judge_config("smollm2-pairwise-fleet")
    direct = fleet.model_copy(update={"backend": OpenAIBackendConfig.model_validate(
        {**fleet.backend.model_dump(), "base_urls": None, "base_url": vllm_server.url})})
    with OpenAIBackend(direct.backend) as backend:
        reference = {j.pair_id: j for j in PairwiseJudge(direct, backend).judge(pairs)}
        assert backend.stats().failed == 0 and backend.stats().retries == {}

    upstream = vllm_server.url.removesuffix("/v1")
    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)
        time.sleep(seconds)

    with DyingProxy(upstream, answers=5) as dying, FaultProxy(upstream, ["ok"]) as healthy:
        urls = [f"{dying.url}/v1", f"{healthy.url}/v1"]
        config = fleet.model_copy(update={"backend": OpenAIBackendConfig.model_validate(
            {**fleet.backend.model_dump(), "base_urls": urls, "max_concurrency": 4, "server_cooldown_s": 600})})
        with OpenAIBackend(config.backend, sleep=sleep) as backend:
            judgments = PairwiseJudge(config, backend).judge(pairs)
            stats = backend.stats()
        dying.dying.join(10)

    # nothing lost: every request answered, by one server or the other
    assert stats.requests == stats.succeeded == 2 * len(pairs) and stats.failed == 0 and stats.failures == {}
    assert stats.servers == {urls[0]: 5, urls[1]: 2 * len(pairs) - 5}
    assert dying.forwarded == 5, "the dead server's count stopped growing when it went"
    assert healthy.forwarded == 2 * len(pairs) - 5
    # the dead server's requests were retried on the other at once
    assert set(stats.retries) == {"connection"} and stats.retries["connection"] >= 1
    assert stats.attempts == stats.requests + stats.retries["connection"] and waits and set(waits) == {0.0}
    # nothing invented: the labels are the ones the server gives without faults
    assert [j.pair_id for j in judgments] == [p.id for p in pairs]
    for judgment in judgments:
        ref = reference[judgment.pair_id]
        assert judgment.labeled == ref.labeled, (judgment.pair_id, judgment.reason, ref.reason)
        assert judgment.backend == "openai" and judgment.prompt_tokens == ref.prompt_tokens
        if ref.labeled:
            assert abs(judgment.p_first - ref.p_first) <= TOLERANCE, judgment.pair_id
    assert any(j.labeled for j in judgments)
    print(f"\nfleet of 2, one dying after 5 answers: answered per server {stats.servers}, "
          f"retries {stats.retries}, attempts {stats.attempts} for {stats.requests} requests")
