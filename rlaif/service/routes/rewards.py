"""Rewards for training loops: /v1/reward, and /get_reward in OpenRLHF's remote reward shape.

With reference responses a reward is P(completion better than its reference) from a pairwise judge (0-1); without,
it is a pointwise judge's rubric score on the judge's own scale (e.g. 1-9), or mapped to 0-1 when the service was
started with `--reward-scale unit`. An unreadable reward is null with its reason, never a silent zero."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from rlaif.judging.pointwise import ScoreItem, ScoreRecord
from rlaif.service.http import Owner, api_error, documented, read_body, service_of, too_many
from rlaif.service.routes.judging import judge_name
from rlaif.service.schemas import OpenRLHFRewardRequest, RewardReply, RewardRequest
from rlaif.service.state import Service

__all__ = ["router"]

router = APIRouter(tags=["rewards"])

_END_OF_TURN = re.compile(r"(?:\s*(?:<\|[A-Za-z0-9_]+\|>|</s>|<eos>))+\s*$")
"""Special tokens that end a turn, left on a response that OpenRLHF decoded with skip_special_tokens=False."""


def _scaled(svc: Service, record: ScoreRecord) -> float | None:
    if not record.scored or record.score is None:
        return None
    if svc.settings.reward_scale == "unit" and record.max_score > record.min_score:
        return (record.score - record.min_score) / (record.max_score - record.min_score)
    return record.score


def _pointwise(svc: Service, judge: str | None, prompts: list[str], completions: list[str]) -> RewardReply:
    name = judge_name(svc, judge, "pointwise")
    planned = [ScoreItem(id=str(i), prompt=p, response=c) if p.strip() and c.strip() else None
               for i, (p, c) in enumerate(zip(prompts, completions))]
    records = iter(svc.catalogue.pointwise(name).score([x for x in planned if x is not None]))
    rewards: list[float | None] = []
    reasons: list[str | None] = []
    for item in planned:
        record = next(records) if item is not None else None
        value = _scaled(svc, record) if record is not None else None
        rewards.append(value)
        reasons.append(None if value is not None else ("empty prompt or completion" if record is None
                                                       else record.reason or "unscored"))
    return RewardReply(judge=name, kind="pointwise_score", rewards=rewards, reasons=reasons)


def rewards(svc: Service, judge: str | None, prompts: list[str], completions: list[str],
            references: list[str] | None) -> RewardReply:
    if len(prompts) != len(completions) or (references is not None and len(references) != len(completions)):
        raise api_error(422, "prompts, completions (and references) must have one entry per completion", "length_mismatch")
    if len(completions) > svc.settings.max_items:
        raise too_many(len(completions), "completions", svc.settings.max_items)
    if references is None:
        return _pointwise(svc, judge, prompts, completions)
    from rlaif.train.judge_reward import JudgeReward

    name = judge_name(svc, judge, "pairwise")
    reward = JudgeReward(svc.catalogue.pairwise(name))
    values = reward(prompts, completions, reference=references)
    for value in values:
        svc.metrics.labels.labels("sync", "unlabeled" if value is None else "labeled").inc()
    return RewardReply(judge=name, kind="pairwise_vs_reference", rewards=values, reasons=reward.last_reasons)


@router.post("/v1/reward", response_model=RewardReply, openapi_extra=documented(RewardRequest))
async def reward(request: Request, owner: str = Owner) -> RewardReply:
    """One reward per completion: P(completion better than its reference) with a pairwise judge when `references`
    are given, else a pointwise judge's score (its rubric scale, or 0-1 with --reward-scale unit); null with the
    reason when unreadable."""
    body = await read_body(request, RewardRequest)  # the item cap before any item is validated
    return await run_in_threadpool(rewards, service_of(request), body.judge, body.prompts, body.completions,
                                   body.references)


@router.post("/get_reward", openapi_extra=documented(OpenRLHFRewardRequest))
async def get_reward(request: Request, owner: str = Owner) -> dict[str, Any]:
    """OpenRLHF's remote reward shape: {"query": [prompt + response], "prompts": [...], "labels": [...]} ->
    {"rewards": [...]}; `labels` (reference responses) make it a pairwise reward, else pointwise."""
    body = await read_body(request, OpenRLHFRewardRequest)
    return await run_in_threadpool(_openrlhf, service_of(request), body)


def _openrlhf(svc: Service, body: OpenRLHFRewardRequest) -> dict[str, Any]:
    if body.prompts is None or len(body.prompts) != len(body.query):
        raise api_error(422, "send `prompts` (one per query) so the response can be cut from each query", "prompts_required")
    completions = []
    for query, prompt in zip(body.query, body.prompts):
        if not query.startswith(prompt):
            raise api_error(422, "each query must start with its prompt", "query_prompt_mismatch")
        completions.append(_END_OF_TURN.sub("", query[len(prompt):]))
    labels = body.labels
    # Any reference given makes this a pairwise reward for every row (a row without one gets null and the reason),
    # so the kind of reward never changes from row to row with the data.
    given = labels is not None and any(isinstance(x, str) and x.strip() for x in labels)
    if given and len(labels or []) != len(body.query):
        raise api_error(422, "send one label (reference response) per query", "length_mismatch")
    references = [x if isinstance(x, str) else "" for x in labels or []] if given else None
    reply = rewards(svc, None, list(body.prompts), completions, references)
    return {"rewards": reply.rewards, "scores": reply.rewards, "reasons": reply.reasons, "judge": reply.judge}
