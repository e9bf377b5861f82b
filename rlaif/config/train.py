"""Configs of the training stages: reward model, PPO, DPO and GRPO.

Each stage has a few explicit, validated fields (what RLAIF needs to decide) plus `trainer_args`, passed
straight into the matching TRL config (`trl.RewardConfig`, `trl.experimental.ppo.PPOConfig`,
`trl.DPOConfig`, `trl.GRPOConfig`) for everything else: epochs, learning rate, logging, `report_to`.
A key of `trainer_args` that an explicit field already sets is an error, so a value is never set twice.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from rlaif.config.base import DEFAULT_MODEL, ConfigModel

__all__ = ["RewardConfig", "PPOStageConfig", "DPOStageConfig", "GRPOStageConfig"]


class _StageConfig(ConfigModel):
    # Explicit fields that are forwarded to the TRL config under the same name.
    _forwarded: ClassVar[tuple[str, ...]] = ("seed",)

    seed: int = 0
    """Seed of the data split, the model head initialisation and the trainer."""
    trainer_args: dict[str, Any] = Field(default_factory=dict)
    """Passed straight into the TRL config (num_train_epochs, learning_rate, report_to, logging_steps...)."""

    @model_validator(mode="after")
    def _no_double_setting(self):
        clash = sorted(set(self.trainer_args) & (set(self._forwarded) | {"output_dir"}))
        if clash:
            raise ValueError(
                f"trainer_args sets {', '.join(clash)}, which this config sets itself (or output_dir, which the "
                "stage chooses): set it once, as the config field"
            )
        return self

    def trl_fields(self) -> dict[str, Any]:
        """The explicit fields that go into the TRL config under their own name."""
        return {name: getattr(self, name) for name in self._forwarded}


class _PreferenceFilter(_StageConfig):
    min_probability: float = Field(0.5, ge=0.0, le=1.0)
    """Drop pairs whose judge probability that `chosen` is better is below this."""
    require_orders_agree: bool = False
    """Drop pairs whose two presentation orders disagreed (a position-biased verdict)."""


class RewardConfig(_PreferenceFilter):
    """Reward model training on the AI-labelled preference dataset (TRL RewardTrainer)."""

    _forwarded: ClassVar[tuple[str, ...]] = ("seed", "max_length")

    base_model: str = DEFAULT_MODEL
    """Embedded model name (rlaif.models.resolve_model) or a local HF folder; gets a 1-output score head."""
    loss: Literal["hard", "margin", "soft"] = "hard"
    """hard: Bradley-Terry on chosen/rejected; margin: BT with margin logit(probability);
    soft: cross-entropy against the judge probability (RLAIF paper)."""
    max_margin: float = Field(5.0, gt=0)
    """Upper bound of the margin logit(probability) used by loss='margin' (a probability of 1 is infinite)."""
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of the filtered pairs held out for pairwise accuracy (seeded split)."""
    max_length: int | None = Field(1024, ge=8)
    """Pairs whose prompt+response is longer, in tokens, are dropped (and counted); None keeps all."""


class PPOStageConfig(_StageConfig):
    """PPO against a trained reward model (trl.experimental.ppo.PPOTrainer)."""

    _forwarded: ClassVar[tuple[str, ...]] = (
        "seed", "kl_coef", "response_length", "temperature", "total_episodes", "per_device_train_batch_size",
        "gradient_accumulation_steps", "num_mini_batches", "num_ppo_epochs", "local_rollout_forward_batch_size",
        "missing_eos_penalty", "learning_rate",
    )

    policy_model: str = DEFAULT_MODEL
    """Embedded model name or local HF folder of the policy to improve (also the frozen reference)."""
    reward_model: str | None = None
    """Folder of the reward model (train_reward_model's out_dir/model); the RLAIF loop fills it in."""
    value_model: str | None = None
    """Folder to initialise the value model from; None: from the reward model (TRL's usual choice)."""
    system_prompt: str | None = None
    """Optional system message put before each prompt."""
    max_prompt_length: int = Field(512, ge=8)
    """Prompts longer than this, in tokens after the chat template, are dropped (and counted)."""
    kl_coef: float = Field(0.05, ge=0)
    """Weight of the per-token KL penalty to the reference policy."""
    response_length: int = Field(64, ge=1)
    """Tokens generated per response; generation stops early at the end-of-turn token."""
    temperature: float = Field(0.7, gt=0)
    """Sampling temperature of the rollouts."""
    total_episodes: int | None = Field(None, ge=1)
    """Prompts rolled out in total; None: one pass over the prompts (num_train_epochs in trainer_args)."""
    per_device_train_batch_size: int = Field(4, ge=1)
    """Rollouts per micro-batch."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per rollout batch."""
    num_mini_batches: int = Field(1, ge=1)
    """Mini-batches each rollout batch is split into for the PPO updates."""
    num_ppo_epochs: int = Field(4, ge=1)
    """PPO optimisation epochs over each rollout batch."""
    local_rollout_forward_batch_size: int = Field(16, ge=1)
    """Batch size of the no-grad forward passes during rollouts."""
    missing_eos_penalty: float | None = Field(None, ge=0)
    """Subtracted from the score of a response that never ended its turn (None: no penalty)."""
    learning_rate: float = Field(3e-6, gt=0)
    """AdamW learning rate of the policy and value model."""


class DPOStageConfig(_PreferenceFilter):
    """Direct preference optimisation straight from the AI-labelled dataset (trl.DPOTrainer)."""

    _forwarded: ClassVar[tuple[str, ...]] = ("seed", "beta", "max_length")

    policy_model: str = DEFAULT_MODEL
    """Embedded model name or local HF folder of the policy (its frozen copy is the reference)."""
    beta: float = Field(0.1, gt=0)
    """DPO temperature: how far the policy may move from the reference."""
    max_length: int | None = Field(1024, ge=8)
    """Longest prompt+response in tokens; TRL truncates longer ones."""


class GRPOStageConfig(_StageConfig):
    """GRPO with an AI judge as the reward function (trl.GRPOTrainer)."""

    _forwarded: ClassVar[tuple[str, ...]] = (
        "seed", "num_generations", "max_completion_length", "temperature", "beta", "per_device_train_batch_size",
    )

    policy_model: str = DEFAULT_MODEL
    """Embedded model name or local HF folder of the policy."""
    system_prompt: str | None = None
    """Optional system message put before each prompt."""
    num_generations: int = Field(4, ge=2)
    """Completions sampled per prompt; rewards are compared within each group."""
    max_completion_length: int = Field(64, ge=1)
    """Tokens generated per completion."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature."""
    beta: float = Field(0.0, ge=0)
    """KL weight to the reference policy (0 = no reference model, TRL's default)."""
    per_device_train_batch_size: int = Field(4, ge=1)
    """Completions per micro-batch; the generation batch must be a multiple of num_generations."""
