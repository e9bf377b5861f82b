"""Config models for judges (`judges/*.yaml`) and runs (`configs/*.yaml`), validated by pydantic.

Every field has a docstring; unknown keys are errors, so a typo in a YAML file is caught by
`rlaif validate` before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from rlaif.errors import ConfigError
from rlaif.resources import resolve_resource

__all__ = [
    "VLLMBackendConfig",
    "OpenAIBackendConfig",
    "ReasoningConfig",
    "ConsistencyConfig",
    "PointwiseConfig",
    "BackendConfig",
    "PrincipleSelection",
    "VerdictConfig",
    "JudgeConfig",
    "EnsembleConfig",
    "EnsembleJudgeConfig",
    "PolicyConfig",
    "RunConfig",
    "load_yaml_model",
    "load_judge_config",
    "load_judge_spec",
    "load_run_config",
]

DEFAULT_MODEL = "smollm2-135m-instruct"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VLLMBackendConfig(_Config):
    """An in-process vLLM engine."""

    kind: Literal["vllm"] = "vllm"
    model: str = DEFAULT_MODEL
    """The embedded model's name, or a path to any local Hugging Face model folder."""
    dtype: str = "float32"
    """float32 on CPUs without AVX-512 BF16 (bfloat16 gives garbage there); bfloat16 on GPUs."""
    enforce_eager: bool = True
    """Skip torch.compile and CUDA graphs: start-up in ~40 s instead of ~270 s on the CPU."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """Share of device memory for weights and KV cache; on the CPU, the KV cache gets this share of the memory
    available on the engine's NUMA node when it starts (VLLM_CPU_KVCACHE_SPACE, in GiB, overrides it)."""
    max_model_len: int = Field(2048, ge=128)
    """Longest prompt plus output, in tokens; longer judge prompts are recorded as unlabeled."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of the shared constitution/instruction prefix across requests."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM's own tensor parallelism across GPUs (scale-up stays on the engine)."""
    seed: int = 0
    """Engine seed."""
    max_num_seqs: int | None = None
    """Upper bound on sequences per engine step; None keeps vLLM's default."""


class OpenAIBackendConfig(_Config):
    """A hosted OpenAI-compatible chat API (OpenAI, a vLLM server, several vLLM servers behind a router)."""

    kind: Literal["openai"]
    model: str
    """Model name as the server knows it."""
    base_url: str
    """e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (the key itself is never written anywhere);
    None for servers that need no key."""
    max_concurrency: int = Field(8, ge=1)
    """Requests in flight at once."""
    timeout_s: float = Field(60.0, gt=0)
    """Per-attempt timeout."""
    max_attempts: int = Field(6, ge=1)
    """Attempts per request on 429, 5xx, timeouts and dropped connections (other 4xx: no retry)."""
    item_budget_s: float = Field(300.0, gt=0)
    """Total time per request across attempts and waits; past it the item is unlabeled with the reason."""
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    """Exponential backoff with jitter between these bounds; a Retry-After header is honoured."""
    usd_per_million_input_tokens: float = Field(0.0, ge=0)
    usd_per_million_output_tokens: float = Field(0.0, ge=0)
    """Prices, for the cost recorded per label and summed per run."""
    logprobs: bool = True
    """Ask for logprobs (servers that refuse them get text verdicts: set verdict.parser to text or auto)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Extra JSON fields sent with every request (server-specific options)."""


def _backend_kind(value: Any) -> str:
    """The backend's `kind`; a backend section without one is the in-process vLLM engine."""
    if isinstance(value, dict):
        return value.get("kind", "vllm")
    return getattr(value, "kind", "vllm")


BackendConfig = Annotated[
    Annotated[VLLMBackendConfig, Tag("vllm")] | Annotated[OpenAIBackendConfig, Tag("openai")],
    Discriminator(_backend_kind, custom_error_type="backend_kind",
                  custom_error_message="backend.kind must be 'vllm' or 'openai'"),
]
_UNION_TAGS = {"vllm", "openai"}


class PrincipleSelection(_Config):
    """Which principles of the constitution each pair is judged under."""

    mode: Literal["sample", "all", "fixed"] = "sample"
    """sample: k principles drawn per pair with `seed` (Constitutional AI); all: every principle; fixed: `ids`."""
    k: int = Field(1, ge=1)
    """How many principles to draw per pair in `sample` mode; their probabilities are averaged."""
    ids: list[str] = Field(default_factory=list)
    """Principle ids for `fixed` mode."""
    seed: int = 0
    """Seed of the per-pair draw; the same pair always gets the same principles."""

    @model_validator(mode="after")
    def _fixed_needs_ids(self) -> "PrincipleSelection":
        if self.mode == "fixed" and not self.ids:
            raise ValueError("principles.mode 'fixed' needs a non-empty 'ids' list")
        return self


class VerdictConfig(_Config):
    """How the verdict is read from the judge's output."""

    parser: Literal["first_token_logprobs", "text", "auto"] = "first_token_logprobs"
    """first_token_logprobs: probability of each verdict token at the verdict position; text: the label parsed
    from the reply (a hard 0/1 probability) for servers that return no logprobs; auto: logprobs where the
    backend returns them, else the text."""
    labels: dict[Literal["A", "B"], list[str]] = Field(
        default_factory=lambda: {"A": ["A"], "B": ["B"]}
    )
    """Token strings (after stripping spaces) that count as each verdict."""
    top_logprobs: int = Field(20, ge=2, le=20)
    """How many top logprobs to request at the verdict position."""
    min_verdict_mass: float = Field(0.0, ge=0.0, lt=1.0)
    """Below this total probability on the verdict tokens the order is unlabeled (judge said something else)."""
    temperature: float = Field(1.0, gt=0)
    """Calibration temperature applied to the verdict log-odds (1.0 = as the model said)."""


class ReasoningConfig(_Config):
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


class ConsistencyConfig(_Config):
    """Self-consistency: the same item judged several times and aggregated."""

    samples: int = Field(1, ge=1)
    """Judgments per item (each both orders); > 1 needs reasoning with temperature > 0 to differ."""
    aggregate: Literal["mean", "majority"] = "mean"
    """mean: average probability; majority: share of samples preferring response 1 (ties unlabeled)."""


class PointwiseConfig(_Config):
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
    def _scale_and_weights(self) -> "PointwiseConfig":
        if self.min_score >= self.max_score:
            raise ValueError(f"min_score {self.min_score} must be below max_score {self.max_score}")
        bad = {k: w for k, w in self.weights.items() if not w > 0}
        if bad:
            raise ValueError(f"weights must be > 0, got {bad}")
        return self


class JudgeConfig(_Config):
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


class EnsembleConfig(_Config):
    """Several judges of the catalogue asked about the same pair; their probabilities are aggregated."""

    members: list[str] = Field(min_length=2)
    """Judge names in judges/ (or paths to judge YAMLs); each may use its own backend."""
    aggregate: Literal["mean", "majority"] = "mean"
    """mean: average P(response 1 better) over the members that answered; majority: their vote share."""

    @model_validator(mode="after")
    def _distinct_members(self) -> "EnsembleConfig":
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"ensemble members must be distinct judges, got {self.members}")
        return self


class EnsembleJudgeConfig(_Config):
    """A judge file that combines other judges (`ensemble:` instead of backend, template and parser)."""

    name: str
    """Recorded with every label."""
    description: str = ""
    ensemble: EnsembleConfig


class PolicyConfig(_Config):
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


class RunConfig(_Config):
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


def _field_path(loc: tuple) -> str:
    """'backend.max_model_len', without the union tag pydantic inserts ('backend.vllm.max_model_len')."""
    parts = [str(p) for i, p in enumerate(loc) if not (i and p in _UNION_TAGS and str(loc[i - 1]) == "backend")]
    return ".".join(parts) or "<root>"


def load_yaml_model(path: Path, model: type[BaseModel]) -> Any:
    """Read a YAML file into a config model, turning every failure into one clear ConfigError."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: invalid {model.__name__}: {problems}") from exc


def load_judge_config(name: str | Path) -> JudgeConfig:
    """Load a single judge by catalogue name (`smollm2-pairwise`) or path."""
    spec = load_judge_spec(name)
    if isinstance(spec, EnsembleJudgeConfig):
        raise ConfigError(f"judge {name!s} is an ensemble of {spec.ensemble.members}; this command needs a single judge")
    return spec


def load_judge_spec(name: str | Path) -> JudgeConfig | EnsembleJudgeConfig:
    """Load a judge or an ensemble of judges (a file with a top-level `ensemble:` key)."""
    path = resolve_resource(name, "judges")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None  # load_yaml_model reports it
    is_ensemble = isinstance(data, dict) and "ensemble" in data
    return load_yaml_model(path, EnsembleJudgeConfig if is_ensemble else JudgeConfig)


def load_run_config(name: str | Path) -> RunConfig:
    """Load a run config by name (`main`) or path."""
    return load_yaml_model(resolve_resource(name, "configs"), RunConfig)
