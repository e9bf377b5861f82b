"""The loop config (`configs/loop.yaml`): prompts -> samples -> labels -> reward model -> PPO -> evaluation."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from rlaif.config.base import ConfigModel, load_yaml_model
from rlaif.config.run import PolicyConfig
from rlaif.config.train import PPOStageConfig, RewardConfig
from rlaif.resources import resolve_resource

__all__ = ["EvalConfig", "LoopConfig", "load_loop_config"]


class EvalConfig(ConfigModel):
    """Evaluation on held-out prompts."""

    prompts: int = Field(8, ge=1)
    """How many prompts are held out of training for the evaluation."""
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0)
    seed: int = 0


class LoopConfig(ConfigModel):
    """prompts -> policy samples -> AI labels -> reward model -> PPO -> evaluation."""

    prompts: str = "sets/instructions-v1.jsonl"
    """JSONL prompt set under prompts/ (or a path); split into training and held-out evaluation prompts."""
    split_seed: int = 0
    train_limit: int | None = Field(None, ge=1)
    """Use at most this many training prompts (small runs)."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """How the starting policy samples the candidate responses that the judge labels."""
    judge: str = "smollm2-pairwise"
    batch_size: int = Field(16, ge=1)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    ppo: PPOStageConfig = Field(default_factory=PPOStageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


def load_loop_config(name: str | Path) -> LoopConfig:
    return load_yaml_model(resolve_resource(name, "configs"), LoopConfig)
