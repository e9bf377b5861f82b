"""The revise config (`configs/revise.yaml`): constitutional critique and revision rounds."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from rlaif.config.backend import BackendConfig, VLLMBackendConfig
from rlaif.config.base import ConfigModel, load_yaml_model
from rlaif.config.judge import PrincipleSelection
from rlaif.resources import resolve_resource

__all__ = ["StepDecoding", "ReviseConfig", "load_revise_config"]


class StepDecoding(ConfigModel):
    """Decoding of one step: the original response, the critique or the revision."""

    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0
    """Base seed; each request's seed is derived from it, the item and the round, so a rerun reproduces it."""


class ReviseConfig(ConfigModel):
    """`rlaif revise`: prompts -> original responses -> critique/revision rounds -> SFT and preference data."""

    prompts: str = "sets/instructions-v1.jsonl"
    """JSONL of {id, prompt[, category]} under prompts/ (or a path); ignored when a samples file is given."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N prompts (or samples)."""
    policy: BackendConfig = Field(default_factory=VLLMBackendConfig)
    """The model that answers, critiques and revises (the embedded model on vLLM by default)."""
    system_prompt: str | None = None
    """Optional system message for the original responses."""
    rounds: int = Field(2, ge=1, le=16)
    """Critique -> revision rounds; round r critiques round r-1's revision."""
    principles: PrincipleSelection = Field(default_factory=PrincipleSelection)
    """sample: one principle drawn per item and round with `seed`; fixed: `ids` in turn, one per round;
    all: every principle of the constitution in turn, one per round."""
    constitution: str = "constitution/default.yaml"
    critique_template: str = "revise/critique.jinja"
    revision_template: str = "revise/revision.jinja"
    response: StepDecoding = StepDecoding(max_tokens=128, temperature=0.7)
    """Decoding of the original responses (not used with a samples file)."""
    critique: StepDecoding = StepDecoding(max_tokens=128, temperature=0.7, seed=1)
    revision: StepDecoding = StepDecoding(max_tokens=160, temperature=0.7, seed=2)
    accept_truncated: bool = False
    """Take a revision cut off at max_tokens; by default it is refused (with the reason) and the previous
    text is kept, so the SFT data never teaches cut-off answers."""
    reject_frame_echo: bool = True
    """Refuse a revision that contains the templates' [BEGIN ...]/[END ...] frame markers: the model restated
    the request instead of answering it (small models do this often)."""
    batch_size: int = Field(16, ge=1)
    """Items per batch; each finished batch of a round is saved, so a killed run loses at most one."""

    @model_validator(mode="after")
    def _one_principle_per_round(self) -> ReviseConfig:
        if self.principles.mode == "sample" and self.principles.k != 1:
            raise ValueError("principles.k must be 1: each round critiques under exactly one principle")
        return self


def load_revise_config(name: str | Path) -> ReviseConfig:
    """Load a revise config by name (`revise`) or path."""
    return load_yaml_model(resolve_resource(name, "configs"), ReviseConfig)
