"""A judgment or a score record as the API returns it: the fields our dataset rows carry."""

from __future__ import annotations

from rlaif.judging.pointwise import ScoreRecord
from rlaif.records import Judgment
from rlaif.service.schemas import ItemResult, PairResult

__all__ = ["pair_result", "row_result", "ROW_FIELDS", "item_result"]

ROW_FIELDS = tuple(f for f in PairResult.model_fields if f not in ("pair_id", "label", "reason"))
"""The fields of a labeled pair's result that its preference row carries as they are (rlaif.store.rows)."""


def pair_result(pair_id: str, judgment: Judgment) -> PairResult:
    """`label` is response_1 / response_2 when labeled, tie for a tie, null (with the reason) otherwise."""
    p = judgment.p_first
    base = dict(pair_id=pair_id, **judgment.columns(), prompt_tokens=judgment.prompt_tokens,
                completion_tokens=judgment.completion_tokens, cost_usd=judgment.cost_usd, latency_s=judgment.latency_s,
                orders_agree=judgment.orders_agree, per_principle_p=[pv.p_first for pv in judgment.per_principle],
                spread=judgment.spread)
    if judgment.labeled and p is not None:
        first = p > 0.5
        share = judgment.vote_share
        return PairResult(**base, label="response_1" if first else "response_2", probability=p if first else 1.0 - p,
                          p_response_1=p, chosen_is_response_1=first,
                          vote_share=None if share is None else (share if first else 1.0 - share))
    if judgment.tie:
        return PairResult(**base, label="tie", probability=0.5, p_response_1=0.5, reason=judgment.reason)
    return PairResult(**base, label=None, reason=judgment.reason or "unlabeled")


def row_result(pair_id: str, row: dict) -> PairResult:
    """A labeled pair's result from its preference row (ROW_FIELDS, plus chosen_is_response_1): the same record
    pair_result makes from its judgment, read from the dataset's columns instead of the judgment's JSON."""
    return PairResult(pair_id=pair_id, label="response_1" if row["chosen_is_response_1"] else "response_2",
                      **{f: row[f] for f in ROW_FIELDS})


def item_result(item_id: str, record: ScoreRecord) -> ItemResult:
    return ItemResult(item_id=item_id, score=record.score if record.scored else None,
                      reason=None if record.scored else (record.reason or "unscored"),
                      per_principle={ps.principle_id: ps.score for ps in record.per_principle},
                      min_score=record.min_score, max_score=record.max_score, **record.columns(),
                      prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
                      cost_usd=record.cost_usd)
