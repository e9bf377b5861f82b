"""The client of `rlaif serve` (rlaif.client), against real servers: a `rlaif serve` on an instant fake judge (fast
tests), the shared real service on the embedded SmolLM2 judges (vllm), and a scripted local HTTP server for the
retry rules. Also the OpenRLHF reward file and `rlaif train grpo --remote-judge`."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from service_support import KEYS, Server, fake_judge, free_port

from rlaif.client import AsyncClient, Client, RemoteJudgeReward, ServiceError
from rlaif.client import openrlhf_reward as orl
from rlaif.errors import RlaifError

ALICE = KEYS["alice"]
PAIRS = [{"prompt": f"Question {i}: how do plants grow?", "response_1": f"With light and water ({i}).",
          "response_2": f"I don't know {i}."} for i in range(10)]


@pytest.fixture(scope="module")
def fake_service(tmp_path_factory):
    """`rlaif serve` on the instant fake pairwise judge, with a cap of 4 items per request."""
    root = tmp_path_factory.mktemp("client-fake")
    server = Server(root / "svc", [str(fake_judge(root))], KEYS, extra=["--max-items", "4"]).start()
    yield server
    server.stop()


@pytest.fixture
def client(fake_service):
    with Client(fake_service.url, ALICE, max_items=4) as c:
        yield c


# ------------------------------------------------------------------ a scripted server for the retry rules


class Scripted:
    """A local HTTP server that answers each request with the next (status, headers, body) of its script (the
    last one repeats), and records the paths and Authorization headers it got."""

    def __init__(self, script: list[tuple[int, dict[str, str], object]]):
        self.script, self.seen = list(script), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
                status, headers, reply = owner.script.pop(0) if len(owner.script) > 1 else owner.script[0]
                data = json.dumps(reply).encode() if not isinstance(reply, bytes) else reply
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": None}}


HEALTHY = (200, {}, {"status": "ok", "judges": ["x"], "queue": 0})


def test_retries_429_after_retry_after_then_succeeds(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("rlaif.client.api.time.sleep", waits.append)
    busy = (429, {"Retry-After": "7"}, _error("too many jobs", "too_many_jobs"))
    with Scripted([busy, busy, HEALTHY]) as server, Client(server.url, "k") as client:
        assert client.health()["status"] == "ok"
        assert len(server.seen) == 3
        assert waits == [7.0, 7.0]  # the server's Retry-After, not our own backoff
        assert all(auth == "Bearer k" for _, _, auth, _ in server.seen)


def test_retries_429_with_retry_after_zero_for_real():
    busy = (429, {"Retry-After": "0"}, _error("busy", "too_many_jobs"))
    reply = {"object": "reward", "judge": "j", "kind": "pairwise_vs_reference", "rewards": [0.25], "reasons": [None]}
    with Scripted([busy, busy, (200, {}, reply)]) as server, Client(server.url, "k") as client:
        got = client.reward(["Q?"], ["A."], ["R."])
    assert got["rewards"] == [0.25] and len(server.seen) == 3
    assert json.loads(server.seen[-1][3]) == {"prompts": ["Q?"], "completions": ["A."], "references": ["R."]}


@pytest.mark.parametrize("status", [502, 503, 504])
def test_retries_gateway_errors_with_backoff(monkeypatch, status):
    waits: list[float] = []
    monkeypatch.setattr("rlaif.client.api.time.sleep", waits.append)
    with Scripted([(status, {}, b"<html>bad gateway</html>"), HEALTHY]) as server, \
            Client(server.url, "k", backoff=0.5) as client:
        assert client.health()["status"] == "ok"
    assert len(server.seen) == 2 and len(waits) == 1 and 0.5 <= waits[0] <= 0.625


def test_gives_up_after_max_retries_with_the_last_error(monkeypatch):
    monkeypatch.setattr("rlaif.client.api.time.sleep", lambda s: None)
    busy = (429, {"Retry-After": "1"}, _error("still busy", "too_many_jobs"))
    with Scripted([busy]) as server, Client(server.url, "k", max_retries=2) as client:
        with pytest.raises(ServiceError) as caught:
            client.health()
    assert len(server.seen) == 3
    assert caught.value.status == 429 and caught.value.code == "too_many_jobs" and caught.value.message == "still busy"
    assert caught.value.retry_after == 1.0


@pytest.mark.parametrize("status,code", [(400, "invalid_json"), (401, "invalid_api_key"), (404, "judge_not_found"),
                                         (422, "invalid_request"), (500, None)])
def test_never_retries_other_errors(monkeypatch, status, code):
    monkeypatch.setattr("rlaif.client.api.time.sleep", lambda s: pytest.fail("slept before a retry"))
    with Scripted([(status, {}, _error(f"nope {status}", code) if code else b"Internal Server Error"), HEALTHY]) as server, \
            Client(server.url, "k") as client:
        with pytest.raises(ServiceError) as caught:
            client.judges()
    assert len(server.seen) == 1 and caught.value.status == status
    assert caught.value.message == (f"nope {status}" if code else "Internal Server Error")
    assert isinstance(caught.value, RlaifError)


def test_connection_errors_are_retried_then_raised(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("rlaif.client.api.time.sleep", waits.append)
    with Client(f"http://127.0.0.1:{free_port()}", "k", max_retries=3, backoff=0.1) as client:
        with pytest.raises(ServiceError) as caught:
            client.health()
    assert caught.value.status is None and caught.value.code == "connection_error"
    assert len(waits) == 3 and waits == sorted(waits)  # exponential backoff


def test_a_non_json_success_is_an_error():
    with Scripted([(200, {}, b"not json")]) as server, Client(server.url) as client:
        with pytest.raises(ServiceError, match="not JSON"):
            client.health()


def test_async_client_retries_too():
    busy = (429, {"Retry-After": "0"}, _error("busy", "too_many_jobs"))

    async def go(url):
        async with AsyncClient(url, "k") as client:
            return await client.health()

    with Scripted([busy, HEALTHY]) as server:
        assert asyncio.run(go(server.url))["status"] == "ok"
        assert len(server.seen) == 2


def test_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("RLAIF_API_KEY", "from-env")
    with Scripted([HEALTHY]) as server, Client(server.url) as client:
        client.health()
        with Client(server.url, "explicit") as other:
            other.health()
    assert [auth for _, _, auth, _ in server.seen] == ["Bearer from-env", "Bearer explicit"]


# ------------------------------------------------------------------ the fake-judge service


def test_splits_requests_over_the_item_cap_and_keeps_order(fake_service, client):
    status, body, _ = fake_service.request("POST", "/v1/judge/pairwise", {"pairs": PAIRS})
    assert status == 413 and body["error"]["code"] == "too_many_items"  # what the client works around
    reply = client.judge_pairwise(PAIRS)
    assert reply["judge"] == "fake-pairwise"
    assert [r["pair_id"] for r in reply["results"]] == [str(i) for i in range(10)]
    # each result is its own pair's: the same as judging that pair alone
    alone = [client.judge_pairwise([p])["results"][0] for p in PAIRS]
    assert [r["p_response_1"] for r in reply["results"]] == [r["p_response_1"] for r in alone]
    assert len({r["p_response_1"] for r in alone}) > 1
    assert reply["usage"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in alone) > 0


def test_a_413_halves_the_request(fake_service):
    """A client that does not know the server's cap (64 by default here, the server takes 4) still gets through."""
    with Client(fake_service.url, ALICE) as unaware, Client(fake_service.url, ALICE, max_items=4) as aware:
        got = unaware.judge_pairwise(PAIRS)
        assert got["results"] == aware.judge_pairwise(PAIRS)["results"]


def test_pairs_as_tuples_with_ids_and_errors(client):
    reply = client.judge_pairwise([("Q?", "Yes.", "No."), {"id": "mine", **PAIRS[0]}])
    assert [r["pair_id"] for r in reply["results"]] == ["0", "mine"]
    with pytest.raises(ValueError, match="pair 0 has no response_2"):
        client.judge_pairwise([{"prompt": "Q?", "response_1": "A"}])
    with pytest.raises(ServiceError) as caught:
        client.judge_pairwise([("Q?", "   ", "No.")])
    assert caught.value.status == 422 and "non-empty" in caught.value.message


def test_reward_in_chunks_with_none_where_no_verdict(client):
    prompts = [p["prompt"] for p in PAIRS]
    completions = [p["response_1"] for p in PAIRS]
    completions[6] = "  "
    reply = client.reward(prompts, completions, [p["response_2"] for p in PAIRS])
    assert reply["kind"] == "pairwise_vs_reference" and reply["judge"] == "fake-pairwise"
    assert len(reply["rewards"]) == len(reply["reasons"]) == 10
    assert reply["rewards"][6] is None and reply["reasons"][6] == "empty completion"
    assert all(0 < r < 1 for i, r in enumerate(reply["rewards"]) if i != 6)
    assert all(r is None for i, r in enumerate(reply["reasons"]) if i != 6)
    with pytest.raises(ValueError, match="one prompt and one reference per completion"):
        client.reward(prompts, completions, ["R."])


def test_judges_health_and_unknown_judge(client):
    assert client.health()["status"] == "ok"
    assert [(j["id"], j["mode"]) for j in client.judges()] == [("fake-pairwise", "pairwise")]
    with pytest.raises(ServiceError) as caught:
        client.judge_pairwise(PAIRS[:1], judge="nope")
    assert caught.value.status == 404 and caught.value.code == "judge_not_found" and "fake-pairwise" in caught.value.message


def test_wrong_key_is_a_401_with_the_message(fake_service):
    for key in ("wrong-key", None):
        with Client(fake_service.url, key) as bad:
            with pytest.raises(ServiceError) as caught:
                bad.judges()
            assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
            assert "missing or invalid API key" in caught.value.message and "401" in str(caught.value)
            assert bad.health()["status"] == "ok"  # /health needs no key


def test_async_client_with_concurrent_calls(fake_service, client):
    prompts, completions, refs = ([p[k] for p in PAIRS] for k in ("prompt", "response_1", "response_2"))

    async def go():
        async with AsyncClient(fake_service.url, ALICE, max_items=3) as aclient:
            return await asyncio.gather(aclient.judge_pairwise(PAIRS), aclient.reward(prompts, completions, refs),
                                        aclient.judges(), aclient.health(), aclient.judge_pairwise(PAIRS[:2]))

    pairwise, reward, judges, health, two = asyncio.run(go())
    assert pairwise["results"] == client.judge_pairwise(PAIRS)["results"]
    assert reward["rewards"] == client.reward(prompts, completions, refs)["rewards"]
    assert [j["id"] for j in judges] == ["fake-pairwise"] and health["status"] == "ok"
    assert two["results"] == pairwise["results"][:2]


def test_remote_judge_reward_on_the_fake_service(fake_service, client):
    reward = RemoteJudgeReward(fake_service.url, api_key=ALICE, reference="I don't know.", max_items=4)
    assert reward.__name__ == "remote_judge_reward" and reward.check()["id"] == "fake-pairwise"
    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": p["prompt"]}] for p in PAIRS]
    completions = [[{"role": "assistant", "content": p["response_1"]}] for p in PAIRS]
    completions[3] = [{"role": "assistant", "content": ""}]
    logged = {}
    got = reward(prompts, completions, log_metric=logged.__setitem__)
    expected = client.reward([p["prompt"] for p in PAIRS], [p["response_1"] for p in PAIRS], ["I don't know."] * 10)
    assert got[3] is None and reward.last_reasons[3] == "empty completion"
    assert [g for i, g in enumerate(got) if i != 3] == [e for i, e in enumerate(expected["rewards"]) if i != 3]
    assert logged == {"remote_judge_reward/unlabeled_frac": 0.1}
    # the dataset's reference column wins over the fixed reference; a row without one gets None
    refs = [p["response_2"] for p in PAIRS[:3]]
    refs[1] = None
    column = reward([p["prompt"] for p in PAIRS[:3]], [p["response_1"] for p in PAIRS[:3]], reference=refs)
    alone = client.reward([PAIRS[0]["prompt"]], [PAIRS[0]["response_1"]], [PAIRS[0]["response_2"]])["rewards"][0]
    assert column[0] == alone and column[1] is None and reward.last_reasons[1] == "no reference response"
    assert reward.calls == 2 and dict(reward.unlabeled) == {"empty completion": 1, "no reference response": 1}
    # picklable (a spawned worker rebuilds its own connection)
    copy = pickle.loads(pickle.dumps(reward))
    assert copy([PAIRS[0]["prompt"]], [PAIRS[0]["response_1"]], reference=[PAIRS[0]["response_2"]]) == [alone]
    copy.close()
    reward.close()


def test_remote_judge_reward_check_fails_fast(fake_service):
    with pytest.raises(ServiceError, match="has no pairwise judge named 'nope'; its judges: fake-pairwise"):
        RemoteJudgeReward(fake_service.url, api_key=ALICE, judge="nope").check()
    with pytest.raises(ServiceError) as caught:
        RemoteJudgeReward(fake_service.url, api_key="wrong").check()
    assert caught.value.status == 401


# ------------------------------------------------------------------ the OpenRLHF reward file


def _openrlhf_env(monkeypatch, url: str, key: str | None = ALICE, fill: str | None = None):
    monkeypatch.setenv("RLAIF_URL", url)
    if key is None:
        monkeypatch.delenv("RLAIF_API_KEY", raising=False)
    else:
        monkeypatch.setenv("RLAIF_API_KEY", key)
    if fill is None:
        monkeypatch.delenv("RLAIF_MISSING_REWARD", raising=False)
    else:
        monkeypatch.setenv("RLAIF_MISSING_REWARD", fill)


def test_openrlhf_reward_on_the_fake_service(fake_service, monkeypatch, client):
    _openrlhf_env(monkeypatch, fake_service.url)
    prompts = [f"<|user|>{p['prompt']}<|assistant|>" for p in PAIRS]
    queries = [q + p["response_1"] for q, p in zip(prompts, PAIRS)]
    queries[2] = prompts[2]  # an empty response: no verdict
    queries[5] = "something else entirely"  # does not start with its prompt: no request, no verdict
    labels = [p["response_2"] for p in PAIRS]
    out = orl.reward_func(queries, prompts, labels)
    rewards = out["rewards"]
    assert rewards.shape == (10,) and str(rewards.dtype) == "torch.float32"
    assert math.isnan(rewards[2]) and math.isnan(rewards[5])
    expected = client.reward(prompts, [q[len(p):] for q, p in zip(queries, prompts)], labels)["rewards"]
    for i in (0, 1, 3, 4, 6, 7, 8, 9):
        assert rewards[i].item() == pytest.approx(expected[i]) and 0 < expected[i] < 1
    assert out["scores"].tolist()[0] == rewards.tolist()[0]
    assert out["extra_logs"]["rlaif_missing_rewards"].item() == 2
    # an explicit fill instead of NaN
    monkeypatch.setenv("RLAIF_MISSING_REWARD", "0.25")
    filled = orl.reward_func(queries, prompts, labels)["rewards"]
    assert filled[2].item() == 0.25 and filled[5].item() == 0.25 and filled[0].item() == rewards[0].item()
    monkeypatch.setenv("RLAIF_MISSING_REWARD", "zero")
    with pytest.raises(ValueError, match="RLAIF_MISSING_REWARD"):
        orl.reward_func(queries, prompts, labels)


def test_openrlhf_reward_needs_the_key(fake_service, monkeypatch):
    _openrlhf_env(monkeypatch, fake_service.url, key=None)
    with pytest.raises(orl.RewardServiceError) as caught:
        orl.reward_func(["Q? A."], ["Q?"], ["R."])
    assert caught.value.status == 401 and "API key" in caught.value.message


def test_openrlhf_reward_retries_429(monkeypatch):
    monkeypatch.setattr(orl.time, "sleep", lambda s: None)
    busy = (429, {"Retry-After": "0"}, _error("busy", "too_many_jobs"))
    ok = (200, {}, {"rewards": [0.75, None], "scores": [0.75, None], "reasons": [None, "no verdict token"]})
    with Scripted([busy, ok]) as server:
        _openrlhf_env(monkeypatch, server.url, key="secret", fill="-1")
        out = orl.reward_func(["Q1 A1", "Q2 A2"], ["Q1", "Q2"], ["R1", "R2"])
    assert out["rewards"].tolist() == [0.75, -1.0]
    assert len(server.seen) == 2 and server.seen[-1][1] == "/get_reward" and server.seen[-1][2] == "Bearer secret"
    assert json.loads(server.seen[-1][3]) == {"query": ["Q1 A1", "Q2 A2"], "prompts": ["Q1", "Q2"], "labels": ["R1", "R2"]}


def test_openrlhf_reward_file_loads_standalone():
    """OpenRLHF loads the file by path, outside any package: it must import only the standard library (torch only
    when called)."""
    path = Path(orl.__file__)
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('reward_func', {str(path)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "assert callable(module.reward_func)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rlaif', 'httpx', 'torch', 'requests'))\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ rlaif train grpo --remote-judge


def test_train_grpo_remote_judge_builds_a_checked_remote_reward(fake_service, monkeypatch, tmp_path):
    from rlaif.cli.main import build_parser
    from rlaif.cli.train import remote_reward

    monkeypatch.setenv("MY_JUDGE_KEY", ALICE)
    args = build_parser().parse_args(["train", "grpo", "--remote-judge", fake_service.url + "/", "--remote-key-env",
                                      "MY_JUDGE_KEY", "--reference", "A reference.", "--out", str(tmp_path / "g")])
    reward = remote_reward(args)
    assert isinstance(reward, RemoteJudgeReward) and reward.url == fake_service.url and reward.judge is None
    assert reward.reference == "A reference." and reward.client.api_key == ALICE
    got = reward(["Q?"], ["An answer."])
    assert len(got) == 1 and 0 < got[0] < 1
    reward.close()


def test_train_grpo_remote_judge_refuses_early_without_the_key(fake_service, monkeypatch, tmp_path, capsys):
    from rlaif.cli import main

    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    code = main(["train", "grpo", "--remote-judge", fake_service.url, "--remote-key-env", "NO_SUCH_KEY_VAR",
                 "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "401" in err[-1] and "$NO_SUCH_KEY_VAR is not set" in err[-1] and "--remote-judge" in err[-1]
    assert not (tmp_path / "g" / "policy").exists()


@pytest.mark.slow
def test_train_grpo_remote_judge_runs(fake_service, monkeypatch, tmp_path, capsys):
    """One tiny GRPO step through the CLI, its rewards from the service (30-45 s, mostly TRL's import and the
    tiny model: opt in with --runslow; the tests above check the wiring)."""
    from rlaif.cli import main
    from rlaif.train.tiny import build_tiny_llama

    tiny = build_tiny_llama(tmp_path / "lm")
    config = tmp_path / "grpo.yaml"
    config.write_text(f"policy_model: {tiny}\nnum_generations: 2\nmax_completion_length: 6\nper_device_train_batch_size: 2\n"
                      "trainer_args: {max_steps: 1, learning_rate: 0.001}\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Tell me about topic {i}."}) + "\n" for i in range(2)))
    monkeypatch.setenv("RLAIF_API_KEY", ALICE)
    out = tmp_path / "run"
    assert main(["train", "grpo", "--remote-judge", fake_service.url, "--config", str(config), "--prompts", str(prompts),
                 "--reference", "A short reference.", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["reward_func"] == "remote_judge_reward" and metrics["reward_finite"]
    assert all(0 < r < 1 for r in metrics["reward_history"])
    printed = capsys.readouterr().out
    assert f'"remote_judge": "{fake_service.url}"' in printed and '"judge_calls": 1' in printed


# ------------------------------------------------------------------ the real service (embedded SmolLM2 judges)

QUESTIONS = ["What is the capital of France?", "How do I boil an egg?", "Name a primary colour."]
ANSWERS = ["The capital of France is Paris.", "Put it in boiling water for about eight minutes.", ""]
REFERENCE = "I don't know."


@pytest.mark.vllm
def test_remote_judge_reward_on_the_real_judge(real_service):
    reward = RemoteJudgeReward(real_service.url, api_key=ALICE, reference=REFERENCE)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    completions = [[{"role": "assistant", "content": a}] for a in ANSWERS]
    got = reward(prompts, completions)
    assert len(got) == 3
    assert all(isinstance(r, float) and 0.0 <= r <= 1.0 for r in got[:2])
    assert got[2] is None and reward.last_reasons[2] == "empty completion"
    assert reward.last_judge == "smollm2-pairwise"
    with Client(real_service.url, ALICE) as client:
        direct = client.reward(QUESTIONS, ANSWERS, [REFERENCE] * 3)
    assert direct["kind"] == "pairwise_vs_reference" and direct["rewards"][2] is None
    assert direct["reasons"][2] == "empty completion"
    assert got[:2] == pytest.approx(direct["rewards"][:2], abs=1e-6)
    reward.close()


@pytest.mark.vllm
def test_client_judges_on_the_real_service(real_service):
    with Client(real_service.url, ALICE) as client:
        modes = {j["id"]: j["mode"] for j in client.judges()}
        assert modes == {"smollm2-pairwise": "pairwise", "smollm2-pointwise": "pointwise"}
        pairwise = client.judge_pairwise([(QUESTIONS[0], ANSWERS[0], REFERENCE)])
        result = pairwise["results"][0]
        assert pairwise["judge"] == "smollm2-pairwise" and result["pair_id"] == "0"
        assert result["label"] in ("response_1", "response_2", "tie", None)
        assert (result["label"] is None) == (result["reason"] is not None)
        pointwise = client.judge_pointwise([{"id": "a", "prompt": QUESTIONS[0], "response": ANSWERS[0]}])
        item = pointwise["results"][0]
        assert pointwise["judge"] == "smollm2-pointwise" and item["item_id"] == "a"
        assert item["score"] is None or item["min_score"] <= item["score"] <= item["max_score"]


@pytest.mark.vllm
def test_openrlhf_reward_on_the_real_judge(real_service, monkeypatch):
    _openrlhf_env(monkeypatch, real_service.url)
    queries = [q + a for q, a in zip(QUESTIONS, ANSWERS)]  # prompt + response, as OpenRLHF sends them
    out = orl.reward_func(queries, QUESTIONS, [REFERENCE] * 3)
    rewards = out["rewards"]
    assert rewards.shape == (3,)
    assert all(0.0 <= r <= 1.0 for r in rewards[:2].tolist()) and math.isnan(rewards[2])
    with Client(real_service.url, ALICE) as client:  # the same pairs through /v1/reward
        assert rewards[:2].tolist() == pytest.approx(client.reward(QUESTIONS[:2], ANSWERS[:2], [REFERENCE] * 2)["rewards"],
                                                     abs=1e-6)
    assert out["extra_logs"]["rlaif_missing_rewards"].item() == 1
    monkeypatch.setenv("RLAIF_MISSING_REWARD", "0.5")
    assert orl.reward_func(queries[2:], QUESTIONS[2:], [REFERENCE])["rewards"].tolist() == [0.5]


@pytest.mark.vllm
def test_openrlhf_style_request_without_the_key_is_refused(real_service):
    """OpenRLHF's own client sends no Authorization header: the service refuses it (the key stays required)."""
    body = json.dumps({"query": [QUESTIONS[0] + " " + ANSWERS[0]], "prompts": [QUESTIONS[0]], "labels": [REFERENCE]})
    request = urllib.request.Request(real_service.url + "/get_reward", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["error"]["code"] == "invalid_api_key"
