"""Config models, one module per concern, all validated by pydantic and loaded from YAML.

    base     ConfigModel, load_yaml_model (one clear error per bad file)
    backend  VLLMBackendConfig | OpenAIBackendConfig | FakeBackendConfig
    judge    JudgeConfig, EnsembleJudgeConfig and their sections
    run      PolicyConfig, RunConfig
    revise   ReviseConfig
    train    RewardConfig, PPOStageConfig, DPOStageConfig, GRPOStageConfig
    loop     LoopConfig

This layer imports only the shared modules (errors, resources).
"""

from __future__ import annotations

from rlaif.config.backend import BackendConfig, FakeBackendConfig, OpenAIBackendConfig, VLLMBackendConfig
from rlaif.config.base import DEFAULT_MODEL, ConfigModel, load_yaml_model
from rlaif.config.judge import (
    ConsistencyConfig,
    EnsembleConfig,
    EnsembleJudgeConfig,
    JudgeConfig,
    JudgeSpec,
    PointwiseConfig,
    PrincipleSelection,
    ReasoningConfig,
    VerdictConfig,
    load_judge_config,
    load_judge_spec,
    sampling_problem,
)
from rlaif.config.loop import EvalConfig, LoopConfig, load_loop_config
from rlaif.config.revise import ReviseConfig, StepDecoding, load_revise_config
from rlaif.config.run import PolicyConfig, RunConfig, load_run_config
from rlaif.config.train import DPOStageConfig, GRPOStageConfig, PPOStageConfig, RewardConfig

__all__ = [
    "DEFAULT_MODEL", "ConfigModel", "load_yaml_model",
    "BackendConfig", "VLLMBackendConfig", "OpenAIBackendConfig", "FakeBackendConfig",
    "PrincipleSelection", "VerdictConfig", "ReasoningConfig", "ConsistencyConfig", "PointwiseConfig", "JudgeConfig",
    "EnsembleConfig", "EnsembleJudgeConfig", "JudgeSpec", "load_judge_spec", "load_judge_config", "sampling_problem",
    "PolicyConfig", "RunConfig", "load_run_config",
    "StepDecoding", "ReviseConfig", "load_revise_config",
    "RewardConfig", "PPOStageConfig", "DPOStageConfig", "GRPOStageConfig",
    "EvalConfig", "LoopConfig", "load_loop_config",
]
