"""What the loop did to the policy, measured on held-out prompts.

Samples from the starting policy and from the trained policy are compared by the judge (both orders)
and scored by the reward model: win rate, mean reward before and after, KL to the reference, and
response length before and after (to expose length hacking), each with a 95% interval.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from rlaif.audit import metrics as M
from rlaif.judging.base import PairJudge
from rlaif.records import CandidatePair
from rlaif.stages.label import label_pairs
from rlaif.store.runfolder import RunFolder

__all__ = ["generate_hf", "response_logprobs", "win_rate", "evaluate_policies"]


@lru_cache(maxsize=4)
def _load(model_dir: str):
    """(tokenizer, model) of a saved policy, loaded once per evaluation (sampling and KL reuse it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from rlaif.train.common import load_tokenizer

    tok = load_tokenizer(model_dir)
    return tok, AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()


def generate_hf(model_dir, prompts: list[str], max_new_tokens: int, temperature: float, seed: int) -> list[tuple[str, int]]:
    """(response text, response tokens) per prompt, sampled with transformers from a saved policy."""
    import torch

    from rlaif.train.common import encode_prompt

    tok, model = _load(str(model_dir))
    torch.manual_seed(seed)
    out = []
    for prompt in prompts:
        ids = torch.tensor([encode_prompt(tok, [{"role": "user", "content": prompt}])])
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=temperature > 0, temperature=temperature or None, top_p=1.0,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = gen[0, ids.shape[1]:]
        out.append((tok.decode(new, skip_special_tokens=True).strip(), int(len(new))))
    return out


def response_logprobs(model_dir, prompts: list[str], responses: list[str]) -> list[float]:
    """Sum of log p(response tokens + end of turn | prompt) under a model."""
    import torch

    from rlaif.train.common import encode_prompt, encode_response

    tok, model = _load(str(model_dir))
    values = []
    for prompt, response in zip(prompts, responses):
        messages = [{"role": "user", "content": prompt}]
        start = len(encode_prompt(tok, messages))
        ids = torch.tensor([encode_response(tok, messages, response)])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        targets = ids[0, 1:]
        values.append(float(logp[start - 1:].gather(1, targets[start - 1:, None]).sum()))
    return values


def _mean_ci(values, seed: int = 0) -> dict:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    lo, hi = M.bootstrap_ci(lambda x: float(np.mean(x)), arr, n_boot=2000, seed=seed)
    clean = lambda x: None if np.isnan(x) else round(float(x), 4)  # noqa: E731
    return {"value": clean(arr.mean()), "ci95": [clean(lo), clean(hi)], "n": int(arr.size)}


def win_rate(p_trained: list[float | None], identical: int = 0) -> dict:
    """Share of judged held-out prompts where the judge prefers the trained policy (Wilson 95% interval).

    Prompts where both policies wrote the identical response are ties, not judged, and counted apart
    (`identical`); `value_ties_half` counts them as half a win each.
    """
    labeled = [p for p in p_trained if p is not None]
    wins = sum(p > 0.5 for p in labeled)
    lo, hi = M.wilson_interval(wins, len(labeled))
    decided = len(labeled) + identical
    return {"value": round(wins / len(labeled), 4) if labeled else None, "ci95": [round(lo, 4), round(hi, 4)] if labeled else [None, None],
            "wins": wins, "losses": sum(p < 0.5 for p in labeled), "labeled": len(labeled), "identical": identical,
            "unlabeled": len(p_trained) - len(labeled) - identical,
            "value_ties_half": round((wins + 0.5 * identical) / decided, 4) if decided else None,
            "mean_p_trained_better": _mean_ci(labeled)}


def evaluate_policies(prompts: list[str], base_dir, trained_dir, reward_dir, judge: PairJudge, out: Path,
                      max_new_tokens: int = 64, temperature: float = 0.7, seed: int = 0) -> dict:
    """The whole evaluation; writes samples, judgments and metrics.json under `out`."""
    run = RunFolder(out)
    before = generate_hf(base_dir, prompts, max_new_tokens, temperature, seed)
    after = generate_hf(trained_dir, prompts, max_new_tokens, temperature, seed)
    run.write_jsonl("samples.jsonl", [{"prompt": p, "before": b[0], "after": a[0], "tokens_before": b[1], "tokens_after": a[1]}
                                      for p, b, a in zip(prompts, before, after)])
    pairs: list[tuple[int, CandidatePair]] = []
    p_trained: list[float | None] = [None] * len(prompts)
    identical = 0
    for i, (p, b, a) in enumerate(zip(prompts, before, after)):
        if a[0].strip() == b[0].strip():
            identical += 1  # same seed for both policies: an unchanged policy writes the same text, a tie
        elif a[0].strip() and b[0].strip():
            pairs.append((i, CandidatePair(id=f"eval-{i}", prompt=p, response_1=a[0], response_2=b[0])))
    result = label_pairs([pair for _, pair in pairs], judge, run, progress=False)
    by_key = {j.key: j for j in result.judgments}
    for i, pair in pairs:
        p_trained[i] = by_key[judge.key(pair)].outcome
    from rlaif.train.scoring import RewardScorer

    scorer = RewardScorer(reward_dir)
    conv = lambda p: [{"role": "user", "content": p}]  # noqa: E731
    r_before = scorer.score([(conv(p), b[0]) for p, b in zip(prompts, before)])
    r_after = scorer.score([(conv(p), a[0]) for p, a in zip(prompts, after)])
    kl = np.subtract(response_logprobs(trained_dir, prompts, [a[0] for a in after]),
                     response_logprobs(base_dir, prompts, [a[0] for a in after]))
    metrics = {
        "prompts": len(prompts),
        "win_rate_trained_vs_start": win_rate(p_trained, identical),
        "reward_before": _mean_ci(r_before, seed), "reward_after": _mean_ci(r_after, seed),
        "reward_change": _mean_ci(np.subtract(r_after, r_before), seed),
        "kl_to_reference": {**_mean_ci(kl, seed), "estimator": "mean over the trained policy's samples of log pi(y|x) - log pi_ref(y|x)"},
        "tokens_before": _mean_ci([b[1] for b in before], seed), "tokens_after": _mean_ci([a[1] for a in after], seed),
    }
    run.write_json("metrics.json", metrics)
    _load.cache_clear()
    return metrics
