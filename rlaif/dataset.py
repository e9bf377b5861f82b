"""Judgments -> a preference dataset in TRL's conversational prompt/chosen/rejected format, with
provenance columns. Unlabeled pairs are never turned into rows; they are listed with their reasons.
"""

from __future__ import annotations

import json

from rlaif.records import CandidatePair, Judgment

__all__ = ["preference_row", "unlabeled_row", "build_dataset", "build_derived_dataset", "PROVENANCE_COLUMNS", "DERIVED_COLUMNS"]

PROVENANCE_COLUMNS = [
    "pair_id", "judge", "judge_model", "judge_backend", "template", "template_version", "constitution_version",
    "principle_ids", "probability", "p_response_1", "orders_agree", "chosen_is_response_1", "per_principle_p",
    "raw_verdicts", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "rationale", "spread", "vote_share",
]


def _order_key(o) -> str:
    return o.order if o.sample == 0 else f"{o.order}/sample{o.sample}"


def _verdicts_dict(judgment: Judgment) -> dict:
    if judgment.members:
        return {"members": {m.judge: {"p_response_1": m.p_first, "reason": m.reason, "verdicts": _verdicts_dict(m)}
                            for m in judgment.members}}
    return {pv.principle_id: {_order_key(o): {"top_logprobs": o.top_logprobs, "output": o.raw_output,
                                              "p_response_1": o.p_first, "verdict_mass": o.verdict_mass,
                                              "parsed_from": o.parsed_from, "text_verdict": o.text_verdict,
                                              "note": o.note, "error": o.error}
                              for o in pv.orders}
            for pv in judgment.per_principle}


def _raw_verdicts(judgment: Judgment) -> str:
    """Verdict-position logprobs, raw output and how each verdict was read, per principle and order (and per
    self-consistency sample and ensemble member), as a JSON string."""
    return json.dumps(_verdicts_dict(judgment), ensure_ascii=False)


def rationales(judgment: Judgment) -> list[dict]:
    """Reasoning mode: every rationale behind the label, with the judge, principle, order and sample it was for."""
    found = [r for m in judgment.members for r in rationales(m)]
    for pv in judgment.per_principle:
        found += [{"judge": judgment.judge, "principle_id": pv.principle_id, "order": o.order, "sample": o.sample,
                   "text": o.rationale} for o in pv.orders if o.rationale is not None]
    return found


def preference_row(pair: CandidatePair, judgment: Judgment) -> dict:
    """One TRL preference row; `probability` is the judge's probability that `chosen` is better, `vote_share` the
    share of self-consistency samples or ensemble members preferring `chosen` (None for a single reading)."""
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
        "rationale": rationales(judgment),
        "spread": judgment.spread,
        "vote_share": None if judgment.vote_share is None else
        (judgment.vote_share if first_wins else 1.0 - judgment.vote_share),
    }


def unlabeled_row(pair: CandidatePair, judgment: Judgment) -> dict:
    return {"pair_id": pair.id, "reason": judgment.reason, "judge": judgment.judge,
            "principle_ids": judgment.principle_ids, "raw_verdicts": _raw_verdicts(judgment),
            "rationale": rationales(judgment), "failed_members": judgment.failed_members, "prompt": pair.prompt, "response_1": pair.response_1, "response_2": pair.response_2}


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
        "rationale": List({"judge": Value("string"), "principle_id": Value("string"), "order": Value("string"),
                           "sample": Value("int64"), "text": Value("string")}),
        "spread": Value("float64"), "vote_share": Value("float64"),
    })
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    # rows written before these columns existed (older preferences.jsonl) get them empty
    optional = {"rationale": [], "spread": None, "vote_share": None}
    return Dataset.from_list([{**row, **{k: v for k, v in optional.items() if k not in row}} for row in rows],
                             features=features)


# Rows derived from pointwise scores (`rlaif score`) or a Bradley-Terry ranking (`rlaif rank`): the same core
# columns as above (prompt/chosen/rejected, judge provenance, probability, orders_agree) so `rlaif train` reads
# them alike, plus what the preference was derived from.
DERIVED_COLUMNS = [
    "pair_id", "source", "judge", "judge_model", "judge_backend", "template", "template_version",
    "constitution_version", "principle_ids", "probability", "orders_agree", "chosen_id", "rejected_id",
    "chosen_score", "rejected_score", "comparisons", "provenance", "prompt_tokens", "completion_tokens", "cost_usd",
]


def build_derived_dataset(rows: list[dict]):
    """A `datasets.Dataset` of derived preference rows (`source` is "pointwise" or "ranking"); `chosen_score` and
    `rejected_score` are overall scores or Bradley-Terry log-strengths, `provenance` a JSON string."""
    from datasets import Dataset, Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    strings = ("pair_id", "source", "judge", "judge_model", "judge_backend", "template", "template_version",
               "constitution_version", "chosen_id", "rejected_id", "provenance")
    features = Features({
        "prompt": List(message), "chosen": List(message), "rejected": List(message),
        **{name: Value("string") for name in strings}, "principle_ids": List(Value("string")),
        "probability": Value("float64"), "orders_agree": Value("bool"), "chosen_score": Value("float64"),
        "rejected_score": Value("float64"), "comparisons": Value("int64"), "prompt_tokens": Value("int64"),
        "completion_tokens": Value("int64"), "cost_usd": Value("float64"),
    })
    features = Features({name: features[name] for name in ["prompt", "chosen", "rejected", *DERIVED_COLUMNS]})
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)
