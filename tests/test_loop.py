"""The RLAIF loop: stages, resume after an interruption, evaluation report; DPO and GRPO from the CLI."""

from __future__ import annotations

import json
import math

import pytest

from rlaif.backends import Choice, Completion, FakeBackend


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlaif.train.tiny import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny") / "policy", seed=0))


def _fake(request):
    """Policy requests get n distinct texts; judge requests prefer the response that mentions 'sun'."""
    if request.top_logprobs:
        user = request.messages[-1].content
        a_part = user.split("[BEGIN RESPONSE A]")[1].split("[END RESPONSE A]")[0]
        p_a = 0.8 if "sun" in a_part else 0.3
        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p_a), "B": math.log(1 - p_a)}], tokens=1)])
    prompt = request.messages[-1].content
    texts = [f"About {prompt}: the sun is bright.", f"About {prompt}: rain again.", "Maybe.", "Sure thing."]
    return Completion(choices=[Choice(text=texts[i % 4], tokens=6) for i in range(request.n)], prompt_tokens=10)


def _loop_config(tiny, prompts_file):
    from rlaif.train.loop import LoopConfig

    return LoopConfig.model_validate({
        "prompts": str(prompts_file), "eval": {"prompts": 4, "max_new_tokens": 8},
        "policy": {"n": 2, "max_tokens": 16},
        "reward": {"base_model": tiny, "loss": "soft", "eval_fraction": 0.25,
                   "trainer_args": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "report_to": "none"}},
        "ppo": {"policy_model": tiny, "total_episodes": 4, "response_length": 8, "per_device_train_batch_size": 2,
                "num_ppo_epochs": 1, "local_rollout_forward_batch_size": 2, "trainer_args": {"report_to": "none"}},
    })


def test_loop_runs_resumes_and_reports(tiny, tmp_path, monkeypatch):
    from rlaif.backends.pool import BackendPool
    from rlaif.train import loop, ppo

    backend = FakeBackend(_fake)
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question number {i}?"}) + "\n" for i in range(16)))
    config, out = _loop_config(tiny, prompts_file), tmp_path / "loop"

    def killed(*a, **k):
        raise KeyboardInterrupt("killed during PPO")

    monkeypatch.setattr(ppo, "train_ppo", killed)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(config, out, progress=False)
    state = json.loads((out / "loop_state.json").read_text())
    assert list(state["done"]) == ["split", "samples", "labels", "reward_model"]
    split = json.loads((out / "split.json").read_text())
    assert not {p["id"] for p in split["train"]} & {p["id"] for p in split["eval"]} and len(split["eval"]) == 4
    calls_before = len(backend.requests)
    monkeypatch.undo()
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)
    state = loop.run_loop(config, out, progress=False)
    assert list(state["done"]) == list(loop.STAGES)
    judge_calls = [r for r in backend.requests[calls_before:] if r.top_logprobs]
    assert len(backend.requests[calls_before:]) == len(judge_calls) <= 2 * 4, "resumed: only the evaluation judged anything"
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["reward_model_heldout_accuracy"]
    assert 0 <= acc["value"] <= 1 and acc["ci95"][0] <= acc["value"] <= acc["ci95"][1]
    ev = metrics["evaluation"]
    win = ev["win_rate_trained_vs_start"]
    assert ev["prompts"] == 4 and win["labeled"] + win["identical"] + win["unlabeled"] == 4
    assert math.isfinite(ev["reward_change"]["value"]) and math.isfinite(ev["kl_to_reference"]["value"])
    assert ev["tokens_before"]["value"] > 0
    report = (out / "report.md").read_text()
    assert "held-out pairwise accuracy" in report and "win rate" in report and "KL to the reference" in report


def _preference_dataset(path):
    from rlaif.store.datasets import build_dataset

    rows = []
    for i in range(8):
        rows.append({"prompt": [{"role": "user", "content": f"Say something nice {i}."}],
                     "chosen": [{"role": "assistant", "content": "You are doing great."}],
                     "rejected": [{"role": "assistant", "content": "Go away."}], "pair_id": f"p{i}", "judge": "j",
                     "judge_model": "m", "judge_backend": "fake", "template": "t", "template_version": "v", "constitution_version": "c",
                     "principle_ids": ["helpfulness"], "probability": 0.8, "p_response_1": 0.8, "orders_agree": True,
                     "chosen_is_response_1": True, "per_principle_p": [0.8], "raw_verdicts": "{}", "prompt_tokens": 1,
                     "completion_tokens": 1, "cost_usd": 0.0, "latency_s": 0.0})
    build_dataset(rows).save_to_disk(str(path), num_shards=1)
    return path


def _changed(before_dir, after_dir) -> bool:
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(before_dir).state_dict()
    b = AutoModelForCausalLM.from_pretrained(str(after_dir)).state_dict()
    return any(not torch.equal(a[k], b[k]) for k in a if k in b)


def test_cli_dpo_on_tiny_model(tiny, tmp_path, capsys):
    from rlaif import cli

    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"policy_model: {tiny}\nbeta: 0.1\ntrainer_args:\n  max_steps: 2\n  per_device_train_batch_size: 4\n  report_to: none\n")
    out = tmp_path / "dpo"
    assert cli.main(["train", "dpo", "--dataset", str(_preference_dataset(tmp_path / "ds")), "--config", str(cfg), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and all(math.isfinite(x) for x in metrics["train_loss_history"])
    assert _changed(tiny, out / "policy")


@pytest.mark.vllm
def test_cli_grpo_with_the_real_judge_as_reward(tiny, vllm_backend, tmp_path, monkeypatch):
    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": q}) + "\n" for i, q in enumerate(["Name a colour.", "Say hi."])))
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(f"policy_model: {tiny}\nnum_generations: 2\nmax_completion_length: 8\nper_device_train_batch_size: 2\n"
                   "trainer_args:\n  max_steps: 2\n  report_to: none\n")
    out = tmp_path / "grpo"
    assert cli.main(["train", "grpo", "--prompts", str(prompts), "--config", str(cfg), "--out", str(out),
                     "--reference", "Blue."]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert _changed(tiny, out / "policy")


@pytest.mark.slow
def test_loop_on_the_embedded_model(tmp_path):
    """The shipped loop config, end to end on the embedded model (minutes on a CPU)."""
    from rlaif.train.loop import load_loop_config, run_loop

    state = run_loop(load_loop_config("loop").model_copy(update={"train_limit": 12}), tmp_path / "loop", progress=False)
    assert list(state["done"])[-1] == "evaluation"
    assert json.loads((tmp_path / "loop" / "metrics.json").read_text())["evaluation"]["prompts"] == 8


def test_win_rate_counts_identical_responses_as_ties():
    from rlaif.train.evaluate import win_rate

    w = win_rate([0.9, 0.2, None, None], identical=1)
    assert (w["wins"], w["losses"], w["identical"], w["unlabeled"]) == (1, 1, 1, 1)
    assert w["value"] == 0.5 and w["value_ties_half"] == 0.5
    assert w["ci95"][0] < 0.5 < w["ci95"][1]
    assert win_rate([0.9, 0.8, 0.7], identical=1)["value_ties_half"] == pytest.approx(3.5 / 4)
