"""Run configs (`configs/*.yaml`): prompts -> policy samples -> AI labels."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from rlaif.config.backend import BackendConfig, VLLMBackendConfig
from rlaif.config.base import ConfigModel, load_yaml_model
from rlaif.resources import resolve_resource

__all__ = ["PolicyConfig", "RunConfig", "load_run_config"]


class PolicyConfig(ConfigModel):
    """The policy that generates candidate responses."""

    backend: BackendConfig = Field(default_factory=VLLMBackendConfig)
    n: int = Field(2, ge=2)
    """Samples per prompt; every pair of distinct samples becomes a candidate pair."""
    temperature: float = Field(0.9, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(192, ge=1)
    seed: int = 1234
    system_prompt: str | None = None
    """Optional system message for the policy."""


class RunConfig(ConfigModel):
    """A run: prompts -> policy samples -> pairs -> AI labels -> preference dataset."""

    prompts: str = "sets/instructions-v1.jsonl"
    """JSONL of {id, prompt[, category]} under prompts/ (or a path)."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N prompts."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    judge: str = "smollm2-pairwise"
    """Judge name in judges/ (or a path to a judge YAML)."""
    batch_size: int = Field(64, ge=1)
    """Pairs per judge batch; finished batches are saved, so a killed run loses at most one."""


def load_run_config(name: str | Path) -> RunConfig:
    """Load a run config by name (`main`) or path."""
    return load_yaml_model(resolve_resource(name, "configs"), RunConfig)
