"""Labels per second: our vLLM logprob judge vs the naive script a user would otherwise write.

Both label the same 32 pairs in both orders with the same rendered judge prompts and the same model:
  (a) rlaif: PairwiseJudge on the in-process vLLM engine, one batched call, one output token with logprobs;
  (b) naive: transformers `generate` of a short verdict text, one request at a time, parsed with a regex.
The pairs are real policy samples (2 per prompt, seeded) for the first 32 bundled prompts.

    .venv/bin/python benchmarks/bench_label.py [--pairs N] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

VERDICT_RE = re.compile(r"\b([AB])\b")


def make_pairs(backend, n_pairs: int):
    from rlaif.config import PolicyConfig, RunConfig
    from rlaif.stages.generate import iter_samples, make_pairs
    from rlaif.stages.run import load_prompts

    prompts, _ = load_prompts(RunConfig())
    policy = PolicyConfig(n=2, max_tokens=128, seed=2026)
    samples = [s for batch, _ in iter_samples(prompts, backend, policy, batch_size=64, progress=False) for s in batch]
    pairs, _ = make_pairs(samples)
    return pairs[: n_pairs + 4]  # 4 extra pairs warm the engine up and are not timed


def bench_vllm(judge, pairs):
    started = time.perf_counter()
    judgments = judge.judge(pairs)
    seconds = time.perf_counter() - started
    return seconds, judgments


def bench_naive(judge, pairs, model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    verdicts, started = [], time.perf_counter()
    for pair in pairs:
        principle = judge.principles_for(pair)[0]
        per_order = []
        for order in ("12", "21"):
            messages = [m.model_dump() for m in judge.request(pair, principle, order).messages]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = tok(text, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
            reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            match = VERDICT_RE.search(reply)
            per_order.append(match.group(1) if match else None)
        verdicts.append(per_order)
    return time.perf_counter() - started, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32, help="pairs to label (default: %(default)s)")
    parser.add_argument("--judge", default="smollm2-pairwise")
    parser.add_argument("--out", default="benchmarks/out", help="where the figures are written as JSON")
    args = parser.parse_args()

    from rlaif.backends.vllm_backend import VLLMBackend
    from rlaif.config import load_judge_config
    from rlaif.judging.pairwise import PairwiseJudge
    from rlaif.models import resolve_model

    config = load_judge_config(args.judge)
    started = time.perf_counter()
    backend = VLLMBackend(config.backend)
    startup = time.perf_counter() - started
    judge = PairwiseJudge(config, backend)
    pairs = make_pairs(backend, args.pairs)
    warm, timed = pairs[:4], pairs[4 : 4 + args.pairs]
    judge.judge(warm)
    vllm_s, judgments = bench_vllm(judge, timed)
    backend.close()
    naive_s, naive = bench_naive(judge, timed, resolve_model(config.backend.model))

    labeled = sum(j.labeled for j in judgments)
    naive_parsed = sum(all(v is not None for v in pv) for pv in naive)
    figures = {
        "pairs": len(timed),
        "requests_per_method": 2 * len(timed),
        "vllm_engine_startup_s": round(startup, 1),
        "a_vllm_logprob_seconds": round(vllm_s, 2),
        "a_vllm_labels_per_s": round(len(timed) / vllm_s, 3),
        "a_labeled": labeled,
        "b_naive_seconds": round(naive_s, 2),
        "b_naive_labels_per_s": round(len(timed) / naive_s, 3),
        "b_naive_both_orders_parsed": naive_parsed,
        "ratio_a_over_b": round(naive_s / vllm_s, 2),
        "a_orders_agree": sum(bool(j.orders_agree) for j in judgments),
        "b_orders_agree": sum(None not in pv and pv[0] != pv[1] for pv in naive),
    }
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_label.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
