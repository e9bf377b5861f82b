"""rlaif: reinforcement learning from AI feedback.

The package is layered; each folder imports only the folders below it (docs/architecture.md):

    cli/        argparse, summaries, exit codes                        (top)
    service/    `rlaif serve`: judging, rewards, bulk jobs, audits and the labeling page over HTTP
    train/      reward model, PPO, DPO, GRPO with the judge as reward, evaluation, the loop
    audit/      gold sets, agreement and calibration metrics, reports, judge hygiene
    stages/     generate, label, score, rank, revise, run: the resumable loops over run folders
    store/      run folders, datasets, manifests, preference rows
    judging/    templates, verdict reading, pairwise / pointwise / ensemble judges, make_judge
    backends/   the backend protocol: in-process vLLM, OpenAI-compatible, fake; pools
    config/     pydantic config models and their YAML loader
    client/     a small HTTP client of the service and a TRL reward function that calls it
    records, errors, resources, models: the shared ground floor

Importing `rlaif` is light: the names below are loaded on first use, and torch, vLLM and datasets only
where they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Backend": "rlaif.backends",
    "BackendError": "rlaif.errors",
    "BackendPool": "rlaif.backends",
    "CandidatePair": "rlaif.records",
    "Completion": "rlaif.backends",
    "CompletionRequest": "rlaif.backends",
    "ConfigError": "rlaif.errors",
    "EnsembleJudge": "rlaif.judging",
    "FakeBackend": "rlaif.backends",
    "InputError": "rlaif.errors",
    "JudgeIdentity": "rlaif.judging",
    "JudgeConfig": "rlaif.config",
    "Judgment": "rlaif.records",
    "ModelError": "rlaif.errors",
    "PairwiseJudge": "rlaif.judging",
    "PointwiseJudge": "rlaif.judging",
    "PromptItem": "rlaif.records",
    "RlaifError": "rlaif.errors",
    "RunConfig": "rlaif.config",
    "Sample": "rlaif.records",
    "SharedBackend": "rlaif.backends",
    "judge_identity": "rlaif.judging",
    "label_pairs": "rlaif.stages.label",
    "load_constitution": "rlaif.judging",
    "load_judge_config": "rlaif.config",
    "load_judge_spec": "rlaif.config",
    "load_run_config": "rlaif.config",
    "load_template": "rlaif.judging",
    "make_judge": "rlaif.judging",
    "open_backend": "rlaif.backends",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlaif' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
