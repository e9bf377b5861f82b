"""Judge configs (`judges/*.yaml`): a single judge, or an ensemble of catalogue judges.

Every field has a docstring; unknown keys are errors, so a typo in a YAML file is caught by
`rlaif validate` before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from rlaif.config.backend import BackendConfig, VLLMBackendConfig
from rlaif.config.base import ConfigModel, load_yaml_model
from rlaif.errors import ConfigError
from rlaif.resources import resolve_resource

__all__ = [
    "PrincipleSelection", "VerdictConfig", "ReasoningConfig", "ConsistencyConfig", "PointwiseConfig", "JudgeConfig",
    "EnsembleConfig", "EnsembleJudgeConfig", "JudgeSpec", "load_judge_spec", "load_judge_config", "sampling_problem",
]


class PrincipleSelection(ConfigModel):
    """Which principles of the constitution each pair is judged under."""

    mode: Literal["sample", "all", "fixed"] = "sample"
    """sample: k principles drawn per pair with `seed` (Constitutional AI); all: every principle; fixed: `ids`."""
    k: int = Field(1, ge=1)
    """How many principles to draw per pair in `sample` mode; their probabilities are averaged."""
    ids: list[str] = Field(default_factory=list)
    """Principle ids for `fixed` mode."""
    seed: int = 0
    """Seed of the per-pair draw; the same pair always gets the same principles. A non-zero seed also reseeds
    sampled rationales (reasoning with temperature > 0), so `rlaif audit --retest` redraws both."""

    @model_validator(mode="after")
    def _fixed_needs_ids(self) -> PrincipleSelection:
        if self.mode == "fixed" and not self.ids:
            raise ValueError("principles.mode 'fixed' needs a non-empty 'ids' list")
        return self


class VerdictConfig(ConfigModel):
    """How the verdict is read from the judge's output."""

    parser: Literal["first_token_logprobs", "text", "auto"] = "first_token_logprobs"
    """first_token_logprobs: probability of each verdict token at the verdict position; text: the label parsed
    from the reply (a hard 0/1 probability) for servers that return no logprobs; auto: logprobs where the
    backend returns them, else the text."""
    labels: dict[str, list[str]] = Field(default_factory=lambda: {"A": ["A"], "B": ["B"]})
    """Token strings (after stripping spaces) that count as each verdict."""
    top_logprobs: int = Field(20, ge=2, le=20)
    """How many top logprobs to request at the verdict position."""
    min_verdict_mass: float = Field(0.0, ge=0.0, lt=1.0)
    """Below this total probability on the verdict tokens the order is unlabeled (judge said something else)."""
    temperature: float = Field(1.0, gt=0)
    """Calibration temperature applied to the verdict log-odds (1.0 = as the model said)."""

    @model_validator(mode="after")
    def _two_labels(self) -> VerdictConfig:
        if sorted(self.labels) != ["A", "B"]:
            raise ValueError(f"verdict.labels needs exactly the keys A and B, got {sorted(self.labels)}")
        if not all(self.labels.values()):
            raise ValueError("verdict.labels: each of A and B needs at least one token string")
        both = {v.strip() for v in self.labels["A"]} & {v.strip() for v in self.labels["B"]}
        if both:
            raise ValueError(f"verdict.labels: {sorted(both)} would count for both A and B")
        return self


class ReasoningConfig(ConfigModel):
    """Reasoning mode: the judge writes a short rationale before its verdict (chain of thought)."""

    enabled: bool = False
    max_tokens: int = Field(256, ge=8)
    """Longest rationale, in tokens."""
    temperature: float = Field(0.0, ge=0)
    """Rationale sampling temperature (> 0 gives different rationales for self-consistency)."""
    marker: str = "Verdict:"
    """The verdict is the label after the LAST occurrence of this marker in the rationale, and only one of the
    offered labels counts; the soft probability is read by a second, prefill-only request that ends with the
    rationale and the marker."""


class ConsistencyConfig(ConfigModel):
    """Self-consistency: the same item judged several times and aggregated."""

    samples: int = Field(1, ge=1)
    """Judgments per item (each both orders); > 1 needs reasoning with temperature > 0 to differ."""
    aggregate: Literal["mean", "majority"] = "mean"
    """mean: average probability; majority: share of samples preferring response 1 (ties unlabeled)."""


class PointwiseConfig(ConfigModel):
    """Pointwise mode: one response scored per principle on a written rubric."""

    # Scores are one digit, 0..9. The expectation reads every score's probability at the ONE output position,
    # so each score must be a single token. SmolLM2's tokenizer (like Llama 2/Mistral/StarCoder ones) splits
    # numbers into single digits: "10" is "1" + "0", and at the first position "1" would mean both 1 and 10.
    # Digits 0-9 are single tokens in every tokenizer we know, so the limit needs no model to validate.
    min_score: int = Field(1, ge=0, le=8)
    """Lowest score on the rubric (a single digit)."""
    max_score: int = Field(9, ge=1, le=9)
    """Highest score on the rubric (a single digit, at most 9: "10" is two tokens for many tokenizers)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Principle id -> weight (> 0) of its score in the overall score (missing ids weigh 1)."""
    pair_scale: float = Field(1.0, gt=0)
    """Pairs from scores: P(chosen better) = sigmoid((overall_chosen - overall_rejected) / pair_scale), reading
    the overall score as a Bradley-Terry log-strength measured in units of pair_scale points."""

    @model_validator(mode="after")
    def _scale_and_weights(self) -> PointwiseConfig:
        if self.min_score >= self.max_score:
            raise ValueError(f"min_score {self.min_score} must be below max_score {self.max_score}")
        bad = {k: w for k, w in self.weights.items() if not w > 0}
        if bad:
            raise ValueError(f"weights must be > 0, got {bad}")
        return self


class JudgeConfig(ConfigModel):
    """One judge of the catalogue: backend, model, template, constitution, decoding and parser."""

    name: str
    """Recorded with every label."""
    description: str = ""
    mode: Literal["pairwise", "pointwise"] = "pairwise"
    """pairwise compares two responses in both orders; pointwise scores one response per principle."""
    backend: BackendConfig = Field(default_factory=VLLMBackendConfig)
    template: str = "judge/pairwise.jinja"
    """Jinja template under prompts/ (or a path)."""
    constitution: str = "constitution/default.yaml"
    """Constitution YAML under prompts/ (or a path)."""
    principles: PrincipleSelection = Field(default_factory=PrincipleSelection)
    verdict: VerdictConfig = Field(default_factory=VerdictConfig)
    both_orders: bool = True
    """Judge (1,2) and (2,1) and average, cancelling position bias. Turning it off is for benchmarks only."""
    reasoning: ReasoningConfig = Field(default_factory=ReasoningConfig)
    self_consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    pointwise: PointwiseConfig = Field(default_factory=PointwiseConfig)


class EnsembleConfig(ConfigModel):
    """Several judges of the catalogue asked about the same pair; their probabilities are aggregated."""

    members: list[str] = Field(min_length=2)
    """Judge names in judges/ (or paths to judge YAMLs); each may use its own backend."""
    aggregate: Literal["mean", "majority"] = "mean"
    """mean: average P(response 1 better) over the members that answered; majority: their vote share."""

    @model_validator(mode="after")
    def _distinct_members(self) -> EnsembleConfig:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"ensemble members must be distinct judges, got {self.members}")
        return self


class EnsembleJudgeConfig(ConfigModel):
    """A judge file that combines other judges (`ensemble:` instead of backend, template and parser)."""

    name: str
    """Recorded with every label."""
    description: str = ""
    ensemble: EnsembleConfig


JudgeSpec = JudgeConfig | EnsembleJudgeConfig
"""What a judge file holds: one judge, or an ensemble of them."""


def sampling_problem(config: JudgeConfig) -> str | None:
    """Why self-consistency samples would all be identical (None when they can differ)."""
    n = config.self_consistency.samples
    if n > 1 and not (config.reasoning.enabled and config.reasoning.temperature > 0):
        return (f"self_consistency.samples is {n}, but the samples would be identical: it needs reasoning.enabled "
                f"with reasoning.temperature > 0")
    return None


def load_judge_config(name: str | Path) -> JudgeConfig:
    """Load a single judge by catalogue name (`smollm2-pairwise`) or path."""
    spec = load_judge_spec(name)
    if isinstance(spec, EnsembleJudgeConfig):
        raise ConfigError(f"judge {name!s} is an ensemble of {spec.ensemble.members}; this command needs a single judge")
    return spec


def load_judge_spec(name: str | Path) -> JudgeSpec:
    """Load a judge or an ensemble of judges (a file with a top-level `ensemble:` key)."""
    path = resolve_resource(name, "judges")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None  # load_yaml_model reports it
    is_ensemble = isinstance(data, dict) and "ensemble" in data
    if is_ensemble:
        return load_yaml_model(path, EnsembleJudgeConfig)
    return load_yaml_model(path, JudgeConfig)


