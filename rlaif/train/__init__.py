"""Training on AI feedback: reward model, PPO, DPO and GRPO with an AI judge as reward (TRL underneath),
the evaluation of a trained policy, and the whole loop (`rlaif.train.loop`).

Imports the layers below it (audit for its intervals, stages, judging, backends, config). Importing this
package is light; torch, transformers and TRL are imported inside the functions.
"""

from __future__ import annotations

from rlaif.config.train import DPOStageConfig, GRPOStageConfig, PPOStageConfig, RewardConfig

__all__ = [
    "RewardConfig", "PPOStageConfig", "DPOStageConfig", "GRPOStageConfig",
    "build_tiny_llama", "prepare_preferences", "train_reward_model", "RewardScorer", "soft_preference_loss",
    "train_ppo", "train_dpo", "JudgeReward", "train_grpo",
]

_LAZY = {
    "build_tiny_llama": "rlaif.train.tiny",
    "prepare_preferences": "rlaif.train.reward",
    "train_reward_model": "rlaif.train.reward",
    "RewardScorer": "rlaif.train.reward",
    "soft_preference_loss": "rlaif.train.reward",
    "train_ppo": "rlaif.train.ppo",
    "train_dpo": "rlaif.train.dpo",
    "JudgeReward": "rlaif.train.judge_reward",
    "train_grpo": "rlaif.train.judge_reward",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlaif.train' has no attribute {name!r}")
