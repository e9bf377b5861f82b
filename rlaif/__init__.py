"""rlaif: reinforcement learning from AI feedback.

Stages, each a small function over typed records (see `rlaif.records`):
prompts -> policy samples (`rlaif.generate`) -> judgments (`rlaif.judge`, `rlaif.label`) ->
preference dataset (`rlaif.dataset`). Importing this package is light: torch, vLLM and datasets are
imported only where they are used.
"""

from __future__ import annotations

from rlaif.backends import Backend, Completion, CompletionRequest, FakeBackend, open_backend
from rlaif.config import JudgeConfig, RunConfig, load_judge_config, load_run_config
from rlaif.errors import BackendError, ConfigError, InputError, ModelError, RlaifError
from rlaif.judge import PairwiseJudge
from rlaif.label import label_pairs
from rlaif.prompting import load_constitution, load_template
from rlaif.records import CandidatePair, Judgment, PromptItem, Sample

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "CandidatePair",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "FakeBackend",
    "InputError",
    "JudgeConfig",
    "Judgment",
    "ModelError",
    "PairwiseJudge",
    "PromptItem",
    "RlaifError",
    "RunConfig",
    "Sample",
    "label_pairs",
    "load_constitution",
    "load_judge_config",
    "load_run_config",
    "load_template",
    "open_backend",
]
