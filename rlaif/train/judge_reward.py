"""An rlaif judge as an online reward function (TRL `reward_funcs`), and GRPO with it.

`JudgeReward` compares each completion with a reference response using any pairwise judge of the catalogue
(a single judge or an ensemble, built by `make_judge`: both orders, principles of the constitution,
verdict-token probabilities); the reward is the judge's probability that the completion is better than the
reference, 0.5 for a tie. A completion the judge cannot label (unreadable verdict, backend error, empty
completion, no reference) gets None, never an invented number: TRL's GRPOTrainer turns None into NaN and
leaves that completion out of the group baseline.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.client.reward import RewardFunction
from rlaif.config.train import GRPOStageConfig
from rlaif.judging.base import PairJudge
from rlaif.records import CandidatePair, content_key
from rlaif.train.common import (
    Timer,
    finite,
    import_grpo,
    jsonl_callback,
    load_tokenizer,
    prompt_messages,
    resolve,
    trl_args,
    write_json,
)

__all__ = ["JudgeReward", "train_grpo"]


class JudgeReward(RewardFunction):
    """Callable with TRL's reward signature: `(prompts, completions, **kwargs) -> list[float | None]`.

    The reference is the `reference_column` dataset column (TRL passes columns as kwargs, one value per
    completion) or, when that column is absent, the fixed `reference` string.
    """

    def __init__(self, judge: PairJudge, reference: str | None = None, reference_column: str = "reference",
                 name: str = "judge_reward"):
        super().__init__(reference, reference_column, name)
        self.judge = judge

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        planned = [texts if isinstance(texts, str) else
                   CandidatePair(id=f"reward-{i}-{content_key(*texts)}", prompt=texts[0], response_1=texts[1],
                                 response_2=texts[2])
                   for i, texts in enumerate(self._plan(prompts, completions, kwargs))]
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
        return self._finish(rewards, reasons, kwargs)


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
