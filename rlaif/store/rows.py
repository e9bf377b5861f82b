"""Preference rows in TRL's conversational prompt/chosen/rejected format, with provenance columns.

Every kind of row (pairwise labels, pairs from pointwise scores, pairs from a ranking, revisions) starts from
`conversation` and, where a judge made it, carries `Provenance.columns()`. Unlabeled pairs are never turned
into rows; they are listed with their reasons.
"""

from __future__ import annotations

from typing import Any

from rlaif.records import CandidatePair, Judgment, OrderVerdict
from rlaif.store.runfolder import json_text

__all__ = ["conversation", "preference_row", "unlabeled_row", "rationales", "PROVENANCE_COLUMNS", "DERIVED_COLUMNS"]


def conversation(prompt: str, **turns: str) -> dict[str, Any]:
    """{"prompt": [user message], name: [assistant message] for each turn} (chosen/rejected or completion)."""
    return {"prompt": [{"role": "user", "content": prompt}],
            **{name: [{"role": "assistant", "content": text}] for name, text in turns.items()}}

PROVENANCE_COLUMNS = [
    "pair_id", "judge", "judge_model", "judge_backend", "template", "template_version", "constitution_version",
    "principle_ids", "probability", "p_response_1", "orders_agree", "chosen_is_response_1", "per_principle_p",
    "raw_verdicts", "prompt_tokens", "completion_tokens", "cost_usd", "latency_s", "rationale", "spread", "vote_share",
]


def _order_key(o: OrderVerdict) -> str:
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
    return json_text(_verdicts_dict(judgment))


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
    p = judgment.p_first
    if not judgment.labeled or p is None:
        raise ValueError(f"pair {pair.id} is unlabeled ({judgment.reason}); it has no preference row")
    first_wins = p > 0.5
    chosen, rejected = (pair.response_1, pair.response_2) if first_wins else (pair.response_2, pair.response_1)
    return {
        **conversation(pair.prompt, chosen=chosen, rejected=rejected),
        "pair_id": pair.id,
        **judgment.columns(),
        "probability": p if first_wins else 1.0 - p,
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
            "rationale": rationales(judgment), "failed_members": judgment.failed_members, "prompt": pair.prompt,
            "response_1": pair.response_1, "response_2": pair.response_2}


# Rows derived from pointwise scores (`rlaif score`) or a Bradley-Terry ranking (`rlaif rank`): the same core
# columns as above (prompt/chosen/rejected, judge provenance, probability, orders_agree) so `rlaif train` reads
# them alike, plus what the preference was derived from.
DERIVED_COLUMNS = [
    "pair_id", "source", "judge", "judge_model", "judge_backend", "template", "template_version",
    "constitution_version", "principle_ids", "probability", "orders_agree", "chosen_id", "rejected_id",
    "chosen_score", "rejected_score", "comparisons", "provenance", "prompt_tokens", "completion_tokens", "cost_usd",
]
