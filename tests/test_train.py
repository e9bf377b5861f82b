"""The training layer on a tiny random Llama (2 layers, hidden 64) with the embedded model's tokenizer.

Reward model (hard, margin and soft losses), PPO, DPO, and GRPO with an rlaif judge (fake backend) as the
reward: each runs a few steps, and the tests check that weights moved, numbers are finite, outputs reload,
and that the filters, losses and judge rewards compute what they claim.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from fakes import MARKER, fake, judge_config, prefers_marker, shown, verdict

from rlaif.backends import Choice, Completion
from rlaif.config.train import DPOStageConfig, GRPOStageConfig, PPOStageConfig, RewardConfig
from rlaif.judging import PairwiseJudge

FAST = {"per_device_train_batch_size": 4, "learning_rate": 1e-3}


def _row(i: int, probability: float, agree: bool | None) -> dict:
    """One row in the dataset format of rlaif.store.rows (with every provenance column)."""
    return {
        "prompt": [{"role": "user", "content": f"Question number {i}: explain topic {i}."}],
        "chosen": [{"role": "assistant", "content": f"Answer {i}: {MARKER}, complete and careful."}],
        "rejected": [{"role": "assistant", "content": f"no {i}"}],
        "pair_id": f"pair-{i}", "judge": "test-judge", "judge_model": "fake", "judge_backend": "fake",
        "template": "judge/pairwise.jinja", "template_version": "v", "constitution_version": "c",
        "principle_ids": ["helpfulness"], "probability": probability,
        "p_response_1": probability, "orders_agree": agree, "chosen_is_response_1": True,
        "per_principle_p": [probability], "raw_verdicts": "{}", "prompt_tokens": 10, "completion_tokens": 2,
        "cost_usd": 0.0, "latency_s": 0.0,
    }


def _preferences(n: int = 24):
    """Probabilities cycle 0.55, 0.6, 0.8, 0.9; every third row (i % 3 == 0) has disagreeing orders."""
    from rlaif.store.datasets import build_dataset

    probs = [0.55, 0.6, 0.8, 0.9]
    return build_dataset([_row(i, probs[i % 4], i % 3 != 0) for i in range(n)])


def _max_change(base_dir, new_dir, cls_name: str) -> float:
    """Largest absolute difference over the transformer backbone weights of two saved models."""
    import transformers

    cls = getattr(transformers, cls_name)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir)).model.state_dict()
    new = cls.from_pretrained(str(new_dir)).model.state_dict()
    assert set(base) == set(new)
    return max((base[k] - new[k]).abs().max().item() for k in base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from rlaif.train.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "lm")


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from rlaif.train.common import load_tokenizer

    return load_tokenizer(tiny)


@pytest.fixture(scope="module")
def reward_runs(tiny, tmp_path_factory):
    """One short reward-model run per loss, on the same data, seed and base model."""
    from rlaif.train.reward import train_reward_model

    root, data, runs = tmp_path_factory.mktemp("rm"), _preferences(), {}
    for loss in ("hard", "margin", "soft"):
        cfg = RewardConfig(base_model=str(tiny), loss=loss, eval_fraction=0.25, seed=3,
                           trainer_args={"max_steps": 4, **FAST})
        runs[loss] = (cfg, train_reward_model(data, cfg, root / loss), root / loss)
    return runs


# ---------------------------------------------------------------- configs, filters, losses (no training)


def test_modules_import_without_torch():
    code = ("import sys, rlaif.train, rlaif.train.reward, rlaif.train.ppo, rlaif.train.dpo, "
            "rlaif.train.judge_reward, rlaif.train.tiny; "
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_configs_reject_typos_and_double_setting():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RewardConfig(los="soft")
    with pytest.raises(ValidationError, match="max_length"):
        RewardConfig(trainer_args={"max_length": 10})
    with pytest.raises(ValidationError, match="kl_coef"):
        PPOStageConfig(trainer_args={"kl_coef": 0.1})
    with pytest.raises(ValidationError, match="output_dir"):
        DPOStageConfig(trainer_args={"output_dir": "x"})
    assert GRPOStageConfig(num_generations=2).trl_fields()["num_generations"] == 2
    with pytest.raises(ValidationError):
        RewardConfig().loss = "soft"  # frozen


def test_filters_drop_exactly_what_they_should():
    from rlaif.train.reward import filter_preferences, prepare_preferences

    kept, report = filter_preferences(_preferences(), min_probability=0.7, require_orders_agree=True)
    # p < 0.7 for i % 4 in {0, 1}: 12 rows; of the other 12, i in {3, 6, 15, 18} disagree.
    assert report == {"n_input": 24, "n_kept": 8, "dropped": {"low_probability": 12, "orders_disagree": 4}}
    assert sorted(kept["pair_id"]) == sorted(f"pair-{i}" for i in (2, 7, 10, 11, 14, 19, 22, 23))
    _, report = filter_preferences(_preferences(), min_probability=0.7)
    assert report["dropped"] == {"low_probability": 12, "orders_disagree": 0}

    from rlaif.store.datasets import build_dataset

    unknown = build_dataset([_row(0, 0.9, None), _row(1, 0.9, True)])
    assert filter_preferences(unknown, require_orders_agree=True)[1]["dropped"]["orders_disagree"] == 1

    cfg = RewardConfig(eval_fraction=0.25, seed=1)
    train, held, report = prepare_preferences(_preferences(), cfg)
    assert (len(train), len(held), report["n_train"], report["n_eval"]) == (18, 6, 18, 6)
    assert not set(train["pair_id"]) & set(held["pair_id"])
    assert prepare_preferences(_preferences(), cfg)[1]["pair_id"] == held["pair_id"]
    other = prepare_preferences(_preferences(), cfg.model_copy(update={"seed": 2}))[1]["pair_id"]
    assert other != held["pair_id"]


def test_datasets_without_a_judge_probability(tokenizer):
    """Plain TRL preference rows (e.g. from `rlaif revise`) train with the hard loss and DPO; filters or losses
    that need the judge's probability refuse with a clear error instead of a KeyError."""
    from datasets import Dataset

    from rlaif.errors import ConfigError
    from rlaif.train.reward import filter_preferences, tokenize_pairs

    plain = Dataset.from_list([{"prompt": [{"role": "user", "content": f"q{i}"}],
                                "chosen": [{"role": "assistant", "content": "good"}],
                                "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(3)])
    kept, report = filter_preferences(plain)
    assert len(kept) == 3 and report["n_kept"] == 3 and "no probability column" in report["note"]
    with pytest.raises(ConfigError, match="no judge `probability` column"):
        filter_preferences(plain, min_probability=0.7)
    with pytest.raises(ConfigError, match="require_orders_agree"):
        filter_preferences(plain, require_orders_agree=True)
    with pytest.raises(ConfigError, match="needs the judge's `probability` column"):
        tokenize_pairs(plain, tokenizer, RewardConfig(loss="soft"))
    tokenized, _ = tokenize_pairs(plain, tokenizer, RewardConfig(loss="hard"))
    assert len(tokenized) == 3


def test_tokenize_pairs_margin_soft_and_length_filter(tokenizer):
    from rlaif.store.datasets import build_dataset
    from rlaif.train.reward import tokenize_pairs

    rows = [_row(0, 0.9, True), _row(1, 1.0, True), _row(2, 0.8, True)]
    rows[2]["chosen"] = [{"role": "assistant", "content": "word " * 300}]
    data = build_dataset(rows)
    margin, too_long = tokenize_pairs(data, tokenizer, RewardConfig(loss="margin", max_length=120))
    assert too_long == 1 and len(margin) == 2
    assert margin["margin"][0] == pytest.approx(math.log(0.9 / 0.1))
    assert margin["margin"][1] == 5.0  # p = 1 is bounded by max_margin
    soft, _ = tokenize_pairs(data, tokenizer, RewardConfig(loss="soft", max_length=None))
    assert soft["probability"] == pytest.approx([0.9, 1.0, 0.8])
    hard, _ = tokenize_pairs(data, tokenizer, RewardConfig(max_length=None))
    assert hard.column_names == ["chosen_ids", "rejected_ids"]
    # Scored like a rollout: chat template with generation prompt, response, end-of-turn token.
    ids = hard["chosen_ids"][0]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids).endswith(f"<|im_start|>assistant\nAnswer 0: {MARKER}, complete and careful.<|im_end|>")


def test_soft_loss_matches_hand_computation():
    import torch
    import torch.nn.functional as F

    from rlaif.train.reward import soft_preference_loss

    chosen, rejected = torch.tensor([1.5, -0.3, 0.2]), torch.tensor([0.5, 0.4, 0.2])
    hard = -F.logsigmoid(chosen - rejected).mean()
    assert soft_preference_loss(chosen, rejected, torch.ones(3)).item() == pytest.approx(hard.item())
    half = torch.full((3,), 0.5)
    assert soft_preference_loss(chosen, rejected, half).item() == pytest.approx(
        soft_preference_loss(rejected, chosen, half).item())
    d = 1.0  # p = 0.8 by hand: -(0.8 log s(1) + 0.2 log s(-1))
    expected = -(0.8 * math.log(1 / (1 + math.exp(-d))) + 0.2 * math.log(1 / (1 + math.exp(d))))
    got = soft_preference_loss(torch.tensor([d]), torch.tensor([0.0]), torch.tensor([0.8])).item()
    assert got == pytest.approx(expected)
    assert soft_preference_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.3])).item() == \
        pytest.approx(math.log(2))


# ---------------------------------------------------------------- reward model


@pytest.mark.parametrize("loss", ["hard", "margin", "soft"])
def test_reward_model_trains_saves_and_reports(reward_runs, tiny, loss):
    from transformers import AutoModelForSequenceClassification

    _, metrics, out = reward_runs[loss]
    assert metrics["steps"] == 4
    assert len(metrics["train_loss_history"]) == 4
    assert all(math.isfinite(x) and x > 0 for x in metrics["train_loss_history"])
    assert _max_change(tiny, out / "model", "AutoModelForSequenceClassification") > 1e-5
    reloaded = AutoModelForSequenceClassification.from_pretrained(str(out / "model"))
    assert reloaded.config.num_labels == 1 and reloaded.config.pad_token_id == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["loss_type"] == loss and (saved["n_train"], saved["n_eval"]) == (18, 6)
    assert saved["dropped"] == {"low_probability": 0, "orders_disagree": 0, "too_long": 0}
    lo, hi = saved["accuracy_interval"]
    assert 0.0 <= lo <= saved["accuracy"] <= hi <= 1.0 and hi - lo > 0.1
    assert saved["seconds"] > 0


def test_the_three_losses_differ_as_defined(reward_runs):
    first = {loss: run[1]["train_loss_history"][0] for loss, run in reward_runs.items()}
    # Same seed, base model and first batch: the margin (logit p > 0) raises the BT loss; soft labels change it.
    assert first["margin"] > first["hard"] + 0.1
    assert abs(first["soft"] - first["hard"]) > 1e-4


def test_reward_scorer_agrees_with_reported_accuracy(reward_runs):
    from rlaif.train.reward import RewardScorer, prepare_preferences, wilson_interval

    cfg, metrics, out = reward_runs["hard"]
    scorer = RewardScorer(out / "model")
    _, held, _ = prepare_preferences(_preferences(), cfg)
    chosen = scorer.score([(r["prompt"], r["chosen"][0]["content"]) for r in held])
    rejected = scorer.score([r["prompt"] + r["rejected"] for r in held])  # conversation form
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(held)
    assert accuracy == metrics["accuracy"]
    assert sum(c - r for c, r in zip(chosen, rejected)) / len(held) == pytest.approx(metrics["mean_margin"], abs=1e-5)
    assert scorer.score([held[0]["prompt"] + held[0]["chosen"]]) == pytest.approx(chosen[:1], abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


# ---------------------------------------------------------------- PPO, DPO


def test_ppo_updates_policy_and_logs_finite_reward_and_kl(reward_runs, tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlaif.train.ppo import train_ppo

    cfg = PPOStageConfig(policy_model=str(tiny), reward_model=str(reward_runs["hard"][2] / "model"),
                         total_episodes=8, per_device_train_batch_size=4, num_ppo_epochs=1, response_length=12,
                         learning_rate=1e-3)
    prompts = [f"Tell me about topic {i}." for i in range(7)] + [[{"role": "user", "content": "Hi!"}]]
    metrics = train_ppo(prompts, cfg, tmp_path)
    assert metrics["updates"] == 2 and metrics["episodes"] == 8
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "objective/scores" in r]
    assert len(steps) == 2
    for r in steps:
        assert all(math.isfinite(r[k]) for k in ("objective/scores", "objective/kl", "objective/entropy"))
    assert metrics["reward_finite"] and metrics["kl_finite"] and metrics["kl_last"] != 0.0
    assert _max_change(tiny, tmp_path / "policy", "AutoModelForCausalLM") > 1e-5
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))


def test_ppo_prompts_use_the_chat_template(tokenizer):
    from rlaif.train.ppo import prompt_dataset

    data, too_long = prompt_dataset(["Short?", "long " * 400], tokenizer, max_prompt_length=64, system_prompt="Be brief.")
    assert (len(data), too_long) == (1, 1)
    text = tokenizer.decode(data["input_ids"][0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>user\nShort?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id  # else PPO masks the prompt's <|im_end|> tokens


def test_dpo_updates_policy_from_our_dataset(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlaif.train.dpo import train_dpo

    cfg = DPOStageConfig(policy_model=str(tiny), min_probability=0.7, trainer_args={"max_steps": 2, **FAST})
    metrics = train_dpo(_preferences(), cfg, tmp_path)
    assert metrics["n_kept"] == 12 and metrics["dropped"]["low_probability"] == 12
    assert metrics["steps"] == 2 and all(math.isfinite(x) for x in metrics["train_loss_history"])
    assert metrics["train_loss_history"][0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference
    assert _max_change(tiny, tmp_path / "policy", "AutoModelForCausalLM") > 1e-5
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))
    assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 2


# ---------------------------------------------------------------- judge as reward, GRPO


def _judge_reward(handler, **kwargs):
    from rlaif.train.judge_reward import JudgeReward

    backend = fake(handler)
    return JudgeReward(PairwiseJudge(judge_config(), backend), **kwargs), backend


def test_judge_reward_follows_the_judge():
    reward, backend = _judge_reward(prefers_marker(0.9))
    good, plain = f"Yes: {MARKER} answer.", "A plain answer."
    # Plain strings, reference per row from the dataset column.
    got = reward(["Q1?", "Q2?"], [good, plain], reference=[plain, good])
    assert got == pytest.approx([0.9, 0.1])
    # Conversational prompts and completions, fixed reference.
    reward.reference = plain
    convo = [[{"role": "system", "content": "Sys."}, {"role": "user", "content": "Q?"}]]
    assert reward(convo, [[{"role": "assistant", "content": good}]]) == pytest.approx([0.9])
    assert shown(backend.requests[-1])[1] in (good, plain)
    assert "Q?" in backend.requests[-1].messages[-1].content
    assert reward.__name__ == "judge_reward"


def test_judge_reward_never_invents_a_reward():
    judge = prefers_marker(0.8)

    def unreadable_for_x(request):
        a, b = shown(request)
        if "x" in a + b:
            return Completion(choices=[Choice(text="I", logprobs=[{"I": -0.1, "The": -2.5}], tokens=1)])
        return judge(request)

    reward, backend = _judge_reward(unreadable_for_x, reference="A reference.")
    got = reward(["Q1?", "Q2?", "Q3?"], [f"{MARKER} answer.", "xx answer", "   "])
    assert got[0] == pytest.approx(0.8)
    assert got[1] is None and got[2] is None
    assert "no verdict token" in reward.last_reasons[1]
    assert reward.last_reasons[2] == "empty completion"
    assert len(backend.requests) == 2 * 2  # two orders for each of the two judgeable completions
    no_ref, _ = _judge_reward(prefers_marker())
    assert no_ref(["Q?"], ["An answer."]) == [None]


def test_grpo_runs_with_the_judge_as_reward(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlaif.train.judge_reward import train_grpo

    def prefers_longer(request):  # position-independent: P(A better) grows with A's extra length
        a, b = shown(request)
        return verdict(1 / (1 + math.exp(-(len(a) - len(b)) / 20)))

    reward, backend = _judge_reward(prefers_longer, reference="A short reference answer.")
    cfg = GRPOStageConfig(policy_model=str(tiny), num_generations=4, max_completion_length=8,
                          per_device_train_batch_size=4, trainer_args={"max_steps": 2, "learning_rate": 1e-3})
    metrics = train_grpo([f"Tell me about topic {i}." for i in range(4)], reward, cfg, tmp_path)
    assert reward.calls == 2 and len(backend.requests) > 0
    assert metrics["steps"] == 2 and metrics["reward_finite"] and len(metrics["reward_history"]) == 2
    assert all(0.0 < r < 1.0 for r in metrics["reward_history"])
    assert _max_change(tiny, tmp_path / "policy", "AutoModelForCausalLM") > 1e-6
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "policy"))


def test_grpo_import_is_stable_across_calls():
    """CI regression: a second import_grpo() in one process re-imported TRL's GRPO modules, leaving two
    GRPOConfig classes, and the trainer's torch.save(args) could no longer pickle its config."""
    import pickle

    from rlaif.train.common import import_grpo

    config_cls, _ = import_grpo()
    again, _ = import_grpo()
    assert again is config_cls
    args = again(output_dir="unused", bf16=False, use_cpu=True, report_to=[])
    assert pickle.loads(pickle.dumps(args)).output_dir == "unused"
