"""Judgments -> a preference dataset in TRL's conversational prompt/chosen/rejected format, with
provenance columns. Unlabeled pairs are never turned into rows; they are listed with their reasons.
"""

from __future__ import annotations

import json

from rlaif.records import CandidatePair, Judgment

__all__ = ["preference_row", "unlabeled_row", "build_dataset", "PROVENANCE_COLUMNS"]

PROVENANCE_COLUMNS = [
    "pair_id", "judge", "judge_model", "judge_backend", "template", "template_version", "constitution_version",
    "principle_ids", "probability", "p_response_1", "orders_agree", "chosen_is_response_1", "per_principle_p",
    "raw_verdicts", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
]


def _raw_verdicts(judgment: Judgment) -> str:
    """Verdict-position logprobs and raw output per principle and order, as a JSON string."""
    return json.dumps(
        {pv.principle_id: {o.order: {"top_logprobs": o.top_logprobs, "output": o.raw_output,
                                     "p_response_1": o.p_first, "verdict_mass": o.verdict_mass}
                           for o in pv.orders}
         for pv in judgment.per_principle},
        ensure_ascii=False,
    )


def preference_row(pair: CandidatePair, judgment: Judgment) -> dict:
    """One TRL preference row; `probability` is the judge's probability that `chosen` is better."""
    if not judgment.labeled:
        raise ValueError(f"pair {pair.id} is unlabeled ({judgment.reason}); it has no preference row")
    first_wins = judgment.p_first > 0.5
    chosen, rejected = (pair.response_1, pair.response_2) if first_wins else (pair.response_2, pair.response_1)
    return {
        "prompt": [{"role": "user", "content": pair.prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "pair_id": pair.id,
        "judge": judgment.judge,
        "judge_model": judgment.model,
        "judge_backend": judgment.backend,
        "template": judgment.template,
        "template_version": judgment.template_version,
        "constitution_version": judgment.constitution_version,
        "principle_ids": judgment.principle_ids,
        "probability": judgment.p_first if first_wins else 1.0 - judgment.p_first,
        "p_response_1": judgment.p_first,
        "orders_agree": judgment.orders_agree,
        "chosen_is_response_1": first_wins,
        "per_principle_p": [pv.p_first for pv in judgment.per_principle],
        "raw_verdicts": _raw_verdicts(judgment),
        "prompt_tokens": judgment.prompt_tokens,
        "completion_tokens": judgment.completion_tokens,
        "cost_usd": judgment.cost_usd,
        "latency_s": judgment.latency_s,
    }


def unlabeled_row(pair: CandidatePair, judgment: Judgment) -> dict:
    return {"pair_id": pair.id, "reason": judgment.reason, "judge": judgment.judge,
            "principle_ids": judgment.principle_ids, "raw_verdicts": _raw_verdicts(judgment),
            "prompt": pair.prompt, "response_1": pair.response_1, "response_2": pair.response_2}


def build_dataset(rows: list[dict]):
    """A `datasets.Dataset` with explicit features (so an empty dataset still has every column)."""
    from datasets import Dataset, Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    features = Features({
        "prompt": List(message), "chosen": List(message), "rejected": List(message),
        "pair_id": Value("string"), "judge": Value("string"), "judge_model": Value("string"),
        "judge_backend": Value("string"), "template": Value("string"), "template_version": Value("string"),
        "constitution_version": Value("string"), "principle_ids": List(Value("string")),
        "probability": Value("float64"), "p_response_1": Value("float64"), "orders_agree": Value("bool"),
        "chosen_is_response_1": Value("bool"), "per_principle_p": List(Value("float64")),
        "raw_verdicts": Value("string"), "prompt_tokens": Value("int64"), "completion_tokens": Value("int64"),
        "cost_usd": Value("float64"), "latency_s": Value("float64"),
    })
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)
