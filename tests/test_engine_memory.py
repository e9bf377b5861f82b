"""The engine takes what it needs: the CPU KV cache sized from the model and the judge YAML, the engine's memory
reported in the backend counters, vLLM's parallel options and engine_args passed through."""

from __future__ import annotations

import json
import os

import pytest

from rlaif.backends.base import BackendStats
from rlaif.backends.vllm_backend import (
    DEFAULT_KV_SEQUENCES,
    KV_ENV,
    KV_STEPS,
    KV_TOKEN_MULTIPLE,
    GiB,
    ModelShape,
    cpu_step_tokens,
    kv_bytes_per_token,
    kv_cache_plan,
    read_model_shape,
)
from rlaif.config import VLLMBackendConfig, load_judge_config
from rlaif.errors import ConfigError

SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "head_dim": 64, "hidden_size": 576, "max_position_embeddings": 8192,
           "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "dtype": "float32"}
PER_TOKEN = 2 * 30 * 3 * 64 * 4  # K and V x layers x KV heads x head dim x float32 bytes = 46,080


@pytest.fixture
def smollm2(tmp_path) -> ModelShape:
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    shape = read_model_shape(tmp_path)
    assert shape is not None
    return shape


def test_model_shape_from_config_json(smollm2, tmp_path):
    assert smollm2 == ModelShape(layers=30, kv_heads=3, head_dim=64, context=8192, dtype="float32")
    assert kv_bytes_per_token(smollm2, 4) == PER_TOKEN
    # no head_dim / num_key_value_heads: hidden_size // heads and one KV head per head (plain multi-head attention)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12}))
    assert read_model_shape(tmp_path) == ModelShape(layers=12, kv_heads=12, head_dim=64)
    # a multimodal model's text tower; a folder without a usable config.json has no shape
    (tmp_path / "config.json").write_text(json.dumps({"text_config": SMOLLM2, "vision_config": {}}))
    assert read_model_shape(tmp_path) == smollm2
    (tmp_path / "config.json").write_text("{}")
    assert read_model_shape(tmp_path) is None
    assert read_model_shape(tmp_path / "missing") is None


def test_kv_cache_derived_from_max_model_len_sequences_and_model(smollm2):
    plan = kv_cache_plan(VLLMBackendConfig(max_model_len=8192), smollm2, available_bytes=20 * GiB, env={})
    assert DEFAULT_KV_SEQUENCES == 2 and plan.source == "derived" and plan.max_model_len == 8192
    assert plan.tokens == 2 * 8192 and plan.bytes == 2 * 8192 * PER_TOKEN and plan.gib == pytest.approx(0.703125)
    plan = kv_cache_plan(VLLMBackendConfig(max_model_len=8192, max_num_seqs=6), smollm2, available_bytes=20 * GiB, env={})
    assert plan.bytes == 6 * 8192 * PER_TOKEN
    # max_model_len None: the model's own context; an odd length is rounded up to whole 256-token spans
    assert kv_cache_plan(VLLMBackendConfig(max_model_len=None), smollm2, env={}).max_model_len == 8192
    odd = kv_cache_plan(VLLMBackendConfig(max_model_len=5000, max_num_seqs=3), smollm2, env={})
    assert odd.tokens == 15104 and odd.tokens % KV_TOKEN_MULTIPLE == 0 and odd.bytes == 15104 * PER_TOKEN


def test_kv_cache_holds_at_least_two_engine_steps(smollm2):
    # a short context: two CPU steps of max(4096, max_model_len) prompt tokens, not 2 x 2048
    config = VLLMBackendConfig(max_model_len=2048)
    assert cpu_step_tokens(config, 2048) == 4096 and KV_STEPS == 2
    assert kv_cache_plan(config, smollm2, env={}).tokens == 8192
    # engine_args may set the step size; the sequences win when they need more
    small_steps = VLLMBackendConfig(max_model_len=2048, max_num_seqs=3, engine_args={"max_num_batched_tokens": 1024})
    assert kv_cache_plan(small_steps, smollm2, env={}).tokens == 3 * 2048


def test_kv_cache_follows_dtype_and_parallelism(smollm2):
    base = kv_cache_plan(VLLMBackendConfig(max_model_len=2048), smollm2, env={}).bytes
    assert base is not None
    assert kv_cache_plan(VLLMBackendConfig(max_model_len=2048, dtype="bfloat16"), smollm2, env={}).bytes == base // 2
    assert kv_cache_plan(VLLMBackendConfig(max_model_len=2048, dtype="auto"), smollm2, env={}).bytes == base  # saved float32
    fp8 = VLLMBackendConfig(max_model_len=2048, engine_args={"kv_cache_dtype": "fp8"})
    assert kv_cache_plan(fp8, smollm2, env={}).bytes == base // 4
    # per worker: pipeline stages split the layers, tensor-parallel ranks the KV heads (3 heads on 2 ranks: 2 each)
    assert kv_cache_plan(VLLMBackendConfig(max_model_len=2048, pipeline_parallel_size=2), smollm2, env={}).bytes == base // 2
    assert kv_cache_plan(VLLMBackendConfig(max_model_len=2048, tensor_parallel_size=2), smollm2, env={}).bytes == base * 2 // 3


def test_explicit_figure_env_ceiling_and_gpu(smollm2):
    config = VLLMBackendConfig(max_model_len=8192, kv_cache_gib=0.5)
    plan = kv_cache_plan(config, smollm2, env={KV_ENV: "3"})
    assert (plan.bytes, plan.source) == (GiB // 2, "kv_cache_gib"), "the YAML's figure wins over the environment"
    plan = kv_cache_plan(VLLMBackendConfig(max_model_len=8192), smollm2, env={KV_ENV: "3"})
    assert (plan.bytes, plan.source) == (3 * GiB, KV_ENV)
    # the derived figure never takes more than gpu_memory_utilization of the memory available at start
    plan = kv_cache_plan(VLLMBackendConfig(max_model_len=8192, gpu_memory_utilization=0.5), smollm2, available_bytes=GiB, env={})
    assert (plan.bytes, plan.source) == (GiB // 2, "derived (capped)")
    # unknown model shape: the old share of the available memory
    assert kv_cache_plan(VLLMBackendConfig(), None, available_bytes=GiB, env={}).bytes == GiB // 2
    # GPU: vLLM's gpu_memory_utilization sizes it; the GiB figure is not used
    gpu = kv_cache_plan(config, smollm2, cpu=False, env={})
    assert gpu.bytes is None and gpu.source == "gpu_memory_utilization"


def test_shipped_judges_use_the_models_context_within_budget(smollm2):
    for name in ["smollm2-pairwise", "smollm2-pairwise-reasoning", "smollm2-pairwise-sc", "smollm2-pointwise"]:
        backend = load_judge_config(name).backend
        assert backend.kind == "vllm" and backend.max_model_len == 8192 and backend.kv_cache_gib is None
        plan = kv_cache_plan(backend, smollm2, available_bytes=20 * GiB, env={})
        # KV cache + 135M float32 weights stay well under the 4 GB resident target (the runtime adds ~1.5 GiB)
        assert plan.bytes is not None and plan.bytes + 135_000_000 * 4 < 1.5 * GiB, name


def test_config_passes_parallel_options_and_refuses_engine_args_that_are_fields():
    config = VLLMBackendConfig(tensor_parallel_size=2, pipeline_parallel_size=2, data_parallel_size=2,
                               engine_args={"swap_space": 0, "distributed_executor_backend": "mp"})
    assert config.model_dump()["engine_args"] == {"swap_space": 0, "distributed_executor_backend": "mp"}
    for key, hint in [("dtype", "backend.dtype"), ("kv_cache_memory_bytes", "backend.kv_cache_gib"), ("model", "backend.model")]:
        with pytest.raises(ValueError, match=f"engine_args may not set {key} \\(set {hint} instead\\)"):
            VLLMBackendConfig(engine_args={key: 1})
    with pytest.raises(ValueError, match="greater than 0"):
        VLLMBackendConfig(kv_cache_gib=0)


def test_bad_engine_args_in_a_judge_yaml_is_one_config_error(tmp_path):
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(__file__).parents[1] / "judges" / "smollm2-pairwise.yaml").read_text())
    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump({**shipped, "backend": {**shipped["backend"], "engine_args": {"seed": 3}}}))
    with pytest.raises(ConfigError, match="engine_args may not set seed"):
        load_judge_config(path)


def test_engine_memory_is_a_level_kept_by_since_and_summed_by_add():
    one, two = BackendStats(requests=5, engine_memory_gib=2.5), BackendStats(requests=2, engine_memory_gib=1.25)
    assert one.since(BackendStats(requests=3, engine_memory_gib=2.5)).engine_memory_gib == 2.5
    assert (one + two).engine_memory_gib == 3.75 and (one + BackendStats()).engine_memory_gib == 2.5
    assert (BackendStats() + BackendStats()).engine_memory_gib is None
    assert BackendStats().since(BackendStats()).engine_memory_gib is None


@pytest.mark.vllm
def test_session_engine_reserves_the_planned_kv_cache_and_reports_its_memory(vllm_backend, judge_config):
    from rlaif.backends.base import CompletionRequest
    from rlaif.models import resolve_model
    from rlaif.records import Message

    memory = vllm_backend.memory
    assert memory.plan.max_model_len == vllm_backend.max_model_len == judge_config.backend.max_model_len == 8192
    assert memory.kv_cache_bytes == memory.plan.bytes, "vLLM reserved exactly the planned KV cache"
    if memory.plan.source == "derived":  # not capped by a machine short of memory, no VLLM_CPU_KVCACHE_SPACE set
        shape = read_model_shape(resolve_model(judge_config.backend.model))
        assert shape is not None
        assert memory.plan.bytes == DEFAULT_KV_SEQUENCES * 8192 * kv_bytes_per_token(shape, 4) == 16384 * PER_TOKEN
    assert memory.weights_bytes is not None and 0.4 * GiB < memory.weights_bytes < 0.6 * GiB  # 135M float32
    stats = vllm_backend.stats()
    assert stats.engine_memory_gib == memory.gib and memory.gib is not None
    assert memory.gib == pytest.approx((memory.kv_cache_bytes + memory.weights_bytes) / GiB, abs=1e-3)
    assert stats.since(stats).engine_memory_gib == memory.gib
    # a pair longer than the old 2048-token limit is judged, not returned as too long
    long_text = "The committee reviewed the figures and agreed to meet again next month. " * 200
    request = CompletionRequest(messages=[Message(role="user", content=long_text + "\nSummarise in one word.")], max_tokens=1)
    assert 2048 < len(vllm_backend.prompt_ids(request)) < 8192
    [completion] = vllm_backend.complete([request])
    assert completion.error is None and completion.choices


EXPLICIT_ENGINE = """
import json, os
from rlaif.backends.vllm_backend import VLLMBackend
from rlaif.config import VLLMBackendConfig

os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
backend = VLLMBackend(VLLMBackendConfig(max_model_len=None, kv_cache_gib=0.5))
print("RESULT", json.dumps({"kv": backend.memory.kv_cache_bytes, "planned": backend.memory.plan.bytes,
                            "source": backend.memory.plan.source, "max_model_len": backend.max_model_len,
                            "env_after": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
                            "gib": backend.stats().engine_memory_gib}))
"""


@pytest.mark.vllm
def test_yaml_figure_wins_over_the_env_in_a_second_engine_and_the_env_is_restored():
    """A second engine runs in its own process (closing one here would tear down the session engine's state)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != KV_ENV}
    done = subprocess.run([sys.executable, "-c", EXPLICIT_ENGINE], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["source"] == "kv_cache_gib" and result["planned"] == GiB // 2
    assert result["max_model_len"] == 8192, "max_model_len null: the model's own context"
    # vLLM reserves whole blocks: at most one 256-token span under the figure
    assert 0 <= result["planned"] - result["kv"] < KV_TOKEN_MULTIPLE * PER_TOKEN
    assert result["env_after"] == "1", "the caller's VLLM_CPU_KVCACHE_SPACE is back after the engine started"
    assert result["gib"] > 0.5
