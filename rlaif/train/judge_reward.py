"""An rlaif judge as an online reward function (TRL `reward_funcs`), and GRPO with it.

`JudgeReward` compares each completion with a reference response using any pairwise judge of the catalogue
(a single judge or an ensemble, built by `make_judge`: both orders, principles of the constitution,
verdict-token probabilities); the reward is the judge's probability that the completion is better than the
reference, 0.5 for a tie. A completion the judge cannot label (unreadable verdict, backend error, empty
completion, no reference) gets None, never an invented number: TRL's GRPOTrainer turns None into NaN and
leaves that completion out of the group baseline.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rlaif.config.train import GRPOStageConfig
from rlaif.judging.base import PairJudge
from rlaif.records import CandidatePair, content_key
from rlaif.train.common import (
    Timer,
    finite,
    import_grpo,
    jsonl_callback,
    load_tokenizer,
    message_text,
    prompt_messages,
    resolve,
    trl_args,
    write_json,
)

__all__ = ["JudgeReward", "train_grpo"]


class JudgeReward:
    """Callable with TRL's reward signature: `(prompts, completions, **kwargs) -> list[float | None]`.

    The reference is the `reference_column` dataset column (TRL passes columns as kwargs, one value per
    completion) or, when that column is absent, the fixed `reference` string.
    """

    def __init__(self, judge: PairJudge, reference: str | None = None, reference_column: str = "reference",
                 name: str = "judge_reward"):
        self.judge = judge
        self.reference = reference
        self.reference_column = reference_column
        self.__name__ = name  # TRL names each reward function's logged metrics after it
        self.calls = 0
        self.unlabeled: Counter[str] = Counter()
        self.last_reasons: list[str | None] = []

    def _references(self, n: int, kwargs: dict) -> list[Any]:
        column = kwargs.get(self.reference_column)
        if column is not None:
            return list(column)
        return [self.reference] * n

    def _pair(self, index: int, prompt: Any, completion: Any, reference: Any) -> CandidatePair | str:
        """The pair to judge, or the reason it cannot be judged."""
        text = message_text(completion, role="assistant")
        ref = None if reference is None else message_text(reference, role="assistant")
        question = message_text(prompt, role="user")
        if not text.strip():
            return "empty completion"
        if ref is None or not ref.strip():
            return "no reference response"
        if not question.strip():
            return "empty prompt"
        return CandidatePair(id=f"reward-{index}-{content_key(question, text, ref)}", prompt=question,
                             response_1=text, response_2=ref)

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        self.calls += 1
        planned = [self._pair(i, p, c, r) for i, (p, c, r)
                   in enumerate(zip(prompts, completions, self._references(len(completions), kwargs)))]
        pairs = [p for p in planned if isinstance(p, CandidatePair)]
        judged = iter(self.judge.judge(pairs)) if pairs else iter(())
        rewards: list[float | None] = []
        reasons: list[str | None] = []
        for item in planned:
            if isinstance(item, str):
                rewards.append(None)
                reasons.append(item)
                continue
            judgment = next(judged)
            rewards.append(judgment.outcome)
            reasons.append(None if judgment.outcome is not None else (judgment.reason or "unlabeled"))
        self.last_reasons = reasons
        self.unlabeled.update(_category(r) for r in reasons if r)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            log_metric(f"{self.__name__}/unlabeled_frac", sum(r is None for r in rewards) / len(rewards))
        return rewards


def _category(reason: str) -> str:
    """A short bucket for counting: our own reasons as they are, the judge's grouped."""
    if reason in ("empty completion", "no reference response", "empty prompt"):
        return reason
    return "judge could not read a verdict"


def _grpo_dataset(prompts: list, system_prompt: str | None):
    """A Dataset with a conversational `prompt` column (plus any extra keys of dict prompts, e.g. `reference`)."""
    from datasets import Dataset

    rows = []
    for item in prompts:
        extra = dict(item) if isinstance(item, dict) else {}
        prompt = extra.pop("prompt", item if not isinstance(item, dict) else None)
        if prompt is None:
            raise ValueError("a dict prompt needs a 'prompt' key")
        rows.append({"prompt": prompt_messages(prompt, system_prompt), **extra})
    return Dataset.from_list(rows)


def _step_summary(records: list[dict], name: str) -> dict:
    steps = [r for r in records if "reward" in r]
    rewards = [r["reward"] for r in steps if r.get("reward") is not None]
    return {"reward_history": rewards, "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None, "reward_finite": finite(rewards),
            "reward_func": name}


def train_grpo(prompts: list, reward_func, cfg: GRPOStageConfig, out_dir: str | Path) -> dict:
    """GRPO on `prompts` (strings, message lists, or dicts with `prompt` and extra columns such as
    `reference`) with `reward_func` (e.g. a JudgeReward); saves the policy to out_dir/policy."""
    import torch
    from transformers import AutoModelForCausalLM
    GRPOConfig, GRPOTrainer = import_grpo()
    timer, out = Timer(), Path(out_dir)
    policy_dir = resolve(cfg.policy_model)
    tokenizer = load_tokenizer(policy_dir)
    tokenizer.padding_side = "left"  # GRPO generates after left-padded prompts
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    args = trl_args(GRPOConfig, out, cfg.trl_fields(), cfg.trainer_args)
    logger = jsonl_callback(out / "log.jsonl")
    trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=args,
                          train_dataset=_grpo_dataset(prompts, cfg.system_prompt), processing_class=tokenizer,
                          callbacks=[logger])
    result = trainer.train()
    trainer.save_model(str(out / "policy"))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(out / "policy"))
    name = getattr(reward_func, "__name__", type(reward_func).__name__)
    metrics = {
        "policy_model": cfg.policy_model, "policy_dir": str(out / "policy"), "n_prompts": len(prompts),
        "train_loss": result.training_loss, **_step_summary(logger.records, name),
        "unlabeled": dict(getattr(reward_func, "unlabeled", {})), "steps": trainer.state.global_step,
        "seconds": timer.seconds, "config": cfg.model_dump(mode="json"),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
