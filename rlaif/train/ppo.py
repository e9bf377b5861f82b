"""PPO against the AI-feedback reward model, with trl.experimental.ppo.PPOTrainer (TRL 1.12).

Four models: the policy being trained, a frozen copy of it (the KL reference), the reward model from
`train_reward_model` and a value model (a sequence-classification model initialised from the reward
model, or from `value_model`). Prompts are tokenized with the policy's chat template and the generation
prompt; rollouts stop at the end-of-turn token, where the reward model reads its score.
Every PPO step's metrics (objective/scores = reward, objective/kl, objective/entropy, losses) go to
out_dir/log.jsonl; the trained policy to out_dir/policy.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from rlaif.config.train import PPOStageConfig
from rlaif.train.common import (
    Timer,
    encode_prompt,
    finite,
    jsonl_callback,
    load_tokenizer,
    prompt_messages,
    resolve,
    silence_experimental,
    trl_args,
    write_json,
)

__all__ = ["train_ppo", "prompt_dataset"]

STEP_KEYS = {"reward": "objective/scores", "kl": "objective/kl", "entropy": "objective/entropy",
             "rlhf_reward": "objective/rlhf_reward", "policy_loss": "loss/policy_avg", "value_loss": "loss/value_avg"}


def prompt_dataset(prompts: list, tokenizer, max_prompt_length: int, system_prompt: str | None = None):
    """A Dataset of `input_ids` (chat template + generation prompt) and how many prompts were too long."""
    from datasets import Dataset

    ids, too_long = [], 0
    for prompt in prompts:
        encoded = encode_prompt(tokenizer, prompt_messages(prompt, system_prompt))
        if len(encoded) > max_prompt_length:
            too_long += 1
        else:
            ids.append(encoded)
    return Dataset.from_dict({"input_ids": ids}), too_long


def _check_tokenizers(tokenizer, reward_dir: Path) -> None:
    other = load_tokenizer(reward_dir)
    if len(other) != len(tokenizer) or other.eos_token_id != tokenizer.eos_token_id:
        raise ValueError(
            f"the reward model at {reward_dir} has a different tokenizer from the policy "
            f"({len(other)} vs {len(tokenizer)} tokens): PPO scores the policy's token ids directly"
        )
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            "the policy tokenizer pads with its end-of-turn token; PPO would mask every end-of-turn token of the "
            "chat prompt. Give it a distinct pad token (rlaif.train.common.load_tokenizer uses the unk token)."
        )


def _load_models(cfg: PPOStageConfig, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    policy_dir = resolve(cfg.policy_model)
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(cfg.reward_model, num_labels=1, dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    with suppress_seqcls_warning():  # a value model started from the policy gets a fresh (seeded) head
        value = AutoModelForSequenceClassification.from_pretrained(
            str(resolve(cfg.value_model)) if cfg.value_model else cfg.reward_model, num_labels=1,
            dtype=torch.float32)
    for model in (policy, ref, reward, value):
        model.config.pad_token_id = tokenizer.pad_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    ref.requires_grad_(False)
    reward.requires_grad_(False)
    return policy, ref, reward, value


def _summary(records: list[dict]) -> dict:
    steps = [{name: r[key] for name, key in STEP_KEYS.items() if key in r} | {"step": r.get("step")}
             for r in records if "objective/scores" in r]
    out: dict = {"steps": steps}
    for name in ("reward", "kl", "entropy"):
        values = [s[name] for s in steps if name in s]
        out[f"{name}_first"] = values[0] if values else None
        out[f"{name}_last"] = values[-1] if values else None
        out[f"{name}_finite"] = finite(values)
    return out


def train_ppo(prompts: list, cfg: PPOStageConfig, out_dir: str | Path) -> dict:
    """Run PPO on `prompts` (strings or message lists); save the policy and return summary metrics."""
    silence_experimental()
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if not cfg.reward_model:
        raise ValueError("PPOStageConfig.reward_model is not set: train a reward model first")
    timer, out = Timer(), Path(out_dir)
    tokenizer = load_tokenizer(resolve(cfg.policy_model))
    tokenizer.padding_side = "left"  # rollouts generate after left-padded prompts
    _check_tokenizers(tokenizer, Path(cfg.reward_model))
    dataset, too_long = prompt_dataset(prompts, tokenizer, cfg.max_prompt_length, cfg.system_prompt)
    if len(dataset) < cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps:
        raise ValueError(f"{len(dataset)} usable prompts ({too_long} too long): fewer than one rollout batch")
    policy, ref, reward, value = _load_models(cfg, tokenizer)
    fields = {"stop_token": "eos", "num_sample_generations": 0, **cfg.trl_fields()}
    args = trl_args(PPOConfig, out, fields, cfg.trainer_args)
    logger = jsonl_callback(out / "log.jsonl")
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=dataset, eval_dataset=dataset, callbacks=[logger])
    with warnings.catch_warnings():  # TRL logs the variance of a single mini-batch's ratio (NaN)
        warnings.filterwarnings("ignore", message="var\\(\\): degrees of freedom")
        trainer.train()
    # PPOTrainer.save_model fails on transformers 5.19 (it never runs Trainer.__init__, so
    # `is_distributed_loading_by_transformers` is missing): save the unwrapped policy directly.
    trainer.accelerator.unwrap_model(trainer.model).policy.save_pretrained(str(out / "policy"))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(out / "policy"))
    metrics = {
        "policy_model": cfg.policy_model, "reward_model": cfg.reward_model, "policy_dir": str(out / "policy"),
        "n_prompts": len(dataset), "dropped_too_long": too_long, "episodes": trainer.state.episode,
        "updates": trainer.state.global_step, **_summary(logger.records), "seconds": timer.seconds,
        "config": cfg.model_dump(mode="json"),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
