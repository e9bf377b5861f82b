"""Backend configs: the in-process vLLM engine or an OpenAI-compatible API, told apart by `kind`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from rlaif.config.base import DEFAULT_MODEL, ConfigModel

__all__ = ["VLLMBackendConfig", "OpenAIBackendConfig", "FakeBackendConfig", "BackendConfig"]


class VLLMBackendConfig(ConfigModel):
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


class OpenAIBackendConfig(ConfigModel):
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


class FakeBackendConfig(ConfigModel):
    """An instant stand-in engine that answers every request at once, for measuring our own code (the scale
    benchmark) and testing plumbing (resume, sharding, Ray). Its verdicts are a hash of the prompt: they are
    not judgments of anything, and the manifest names the backend `fake`. Never label real data with it."""

    kind: Literal["fake"]
    model: str = "instant"
    seed: int = 0
    """Changes every answer (another hash)."""


def _backend_kind(value: Any) -> str:
    """The backend's `kind`; a backend section without one is the in-process vLLM engine."""
    if isinstance(value, dict):
        return value.get("kind", "vllm")
    return getattr(value, "kind", "vllm")


BackendConfig = Annotated[
    Annotated[VLLMBackendConfig, Tag("vllm")] | Annotated[OpenAIBackendConfig, Tag("openai")]
    | Annotated[FakeBackendConfig, Tag("fake")],
    Discriminator(_backend_kind, custom_error_type="backend_kind",
                  custom_error_message="backend.kind must be 'vllm', 'openai' or 'fake'"),
]


