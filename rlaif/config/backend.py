"""Backend configs: the in-process vLLM engine or an OpenAI-compatible API, told apart by `kind`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from rlaif.config.base import DEFAULT_MODEL, ConfigModel

__all__ = ["VLLMBackendConfig", "OpenAIBackendConfig", "FakeBackendConfig", "BackendConfig"]


class VLLMBackendConfig(ConfigModel):
    """An in-process vLLM engine.

    Memory: on the CPU the engine's KV cache is `kv_cache_gib` GiB, or, when that is not given, sized from the
    model (`KV-cache size = tokens x 2 x layers x KV heads x head dim x dtype bytes`, read from the model folder's
    config.json) for `max_num_seqs` (default 2) sequences of `max_model_len` tokens; see docs/engine.md. On a GPU
    vLLM's own `gpu_memory_utilization` sizes it and `kv_cache_gib` is not used.
    Parallelism is vLLM's own: `tensor_parallel_size`, `pipeline_parallel_size` and `data_parallel_size` are
    passed to `vllm.LLM`, and `engine_args` passes any other `vllm.LLM` keyword."""

    kind: Literal["vllm"] = "vllm"
    model: str = DEFAULT_MODEL
    """The embedded model's name, or a path to any local Hugging Face model folder."""
    dtype: str = "float32"
    """float32 on CPUs without AVX-512 BF16 (bfloat16 gives garbage there); bfloat16 on GPUs."""
    enforce_eager: bool = True
    """Skip torch.compile and CUDA graphs: start-up in ~40 s instead of ~270 s on the CPU."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """GPU: share of device memory for weights and KV cache (vLLM's own meaning). CPU: only a ceiling, the
    derived KV cache never takes more than this share of the memory available when the engine starts."""
    max_model_len: int | None = Field(2048, ge=128)
    """Longest prompt plus output, in tokens; longer judge prompts are recorded as unlabeled. None: the model's
    own context (max_position_embeddings in its config.json; 8192 for SmolLM2)."""
    kv_cache_gib: float | None = Field(None, gt=0)
    """CPU only: the KV cache in GiB (per worker with tensor/pipeline parallelism), instead of the figure
    derived from the model, max_model_len and max_num_seqs. Given here it also wins over the
    VLLM_CPU_KVCACHE_SPACE environment variable, which otherwise replaces the derived figure. Ignored on a GPU."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of the shared constitution/instruction prefix across requests."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vLLM's tensor parallelism: each layer split across this many devices (scale-up stays on the engine)."""
    pipeline_parallel_size: int = Field(1, ge=1)
    """vLLM's pipeline parallelism: the layers split into this many stages on as many devices."""
    data_parallel_size: int = Field(1, ge=1)
    """vLLM's data parallelism: this many engine replicas, each with tensor x pipeline devices."""
    seed: int = 0
    """Engine seed."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Upper bound on sequences per engine step (None keeps vLLM's default); on the CPU the derived KV cache
    holds this many sequences of max_model_len tokens (2 when None; shorter ones share it)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Any other `vllm.LLM` keyword, passed as is (e.g. `{kv_cache_dtype: fp8, swap_space: 0}`) and applied last,
    so it may also replace rlaif's CPU settings (enable_chunked_prefill, max_num_batched_tokens). Keywords this
    config has a field for, `model` and `kv_cache_memory_bytes` (use kv_cache_gib) are refused."""

    @model_validator(mode="after")
    def _engine_args_are_not_fields(self) -> VLLMBackendConfig:
        taken = sorted(k for k in self.engine_args
                       if k in type(self).model_fields or k in ("model", "kv_cache_memory_bytes"))
        if taken:
            hints = {"kv_cache_memory_bytes": "kv_cache_gib"}
            raise ValueError("engine_args may not set " + ", ".join(
                f"{k} (set backend.{hints.get(k, k)} instead)" for k in taken))
        return self


class OpenAIBackendConfig(ConfigModel):
    """A hosted OpenAI-compatible chat API (OpenAI, a vLLM server, several vLLM servers behind a router, or a
    fleet of servers the backend spreads requests over itself: `base_urls`)."""

    kind: Literal["openai"]
    model: str
    """Model name as the server knows it."""
    base_url: str | None = None
    """One server, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (give this or `base_urls`)."""
    base_urls: list[str] | None = Field(None, min_length=1)
    """Several servers with the same model, e.g. [http://127.0.0.1:8000/v1, http://127.0.0.1:8001/v1]: each request
    goes to the healthy server with the fewest requests in flight, and a failed attempt is retried at once on
    another healthy server (give this or `base_url`)."""
    server_cooldown_s: float = Field(10.0, gt=0)
    """How long a server that dropped a connection, timed out or answered 5xx/429 is skipped while others are
    healthy (a Retry-After header sets the time instead); then it gets requests again."""
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

    @model_validator(mode="after")
    def _one_way_to_name_servers(self) -> OpenAIBackendConfig:
        if (self.base_url is None) == (self.base_urls is None):
            raise ValueError("give exactly one of base_url (one server) or base_urls (a list of servers)")
        seen = [url.rstrip("/") for url in self.urls]
        twice = sorted({url for url in seen if seen.count(url) > 1})
        if twice:
            raise ValueError(f"base_urls lists the same server more than once: {', '.join(twice)}")
        return self

    @property
    def urls(self) -> list[str]:
        """The servers' base URLs: `base_urls`, or `base_url` alone."""
        return list(self.base_urls) if self.base_urls is not None else [self.base_url or ""]


class FakeBackendConfig(ConfigModel):
    """An instant stand-in engine that answers every request at once, for measuring our own code (the scale
    benchmark) and testing plumbing (resume, sharding, Ray). Its verdicts are a hash of the prompt: they are
    not judgments of anything, and the manifest names the backend `fake`. Never label real data with it."""

    kind: Literal["fake"]
    model: str = "instant"
    seed: int = 0
    """Changes every answer (another hash)."""
    latency_s: float = Field(0.0, ge=0, le=60)
    """Seconds each call takes (a sleep): to test what happens while work is in flight (cancel, a killed worker)."""


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


