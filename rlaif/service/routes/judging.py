"""Synchronous judging: /v1/judge/pairwise and /v1/judge/pointwise. Concurrent requests share engine calls
(micro-batching) and go ahead of bulk chunks."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rlaif.judging.pointwise import ScoreItem
from rlaif.records import CandidatePair
from rlaif.service.catalogue import UnknownJudge
from rlaif.service.engines import drive_async
from rlaif.service.http import Owner, api_error, documented, read_body, service_of
from rlaif.service.results import item_result, pair_result
from rlaif.service.schemas import PairwiseReply, PairwiseRequest, PointwiseReply, PointwiseRequest, Usage
from rlaif.service.state import Service

__all__ = ["router", "judge_name"]

router = APIRouter(tags=["judging"])


def judge_name(service: Service, requested: str | None, mode: str) -> str:
    try:
        return service.catalogue.name(requested, mode)
    except UnknownJudge as exc:
        raise api_error(404, str(exc), "judge_not_found") from None


@router.post("/v1/judge/pairwise", response_model=PairwiseReply, openapi_extra=documented(PairwiseRequest))
async def judge_pairwise(request: Request, owner: str = Owner) -> Response:
    """Judge a few pairs now (both orders, each principle): one result per pair, in order."""
    body = await read_body(request, PairwiseRequest)
    svc = service_of(request)
    name = judge_name(svc, body.judge, "pairwise")
    pairs = [CandidatePair(id=p.id or str(i), prompt=p.prompt, response_1=p.response_1, response_2=p.response_2)
             for i, p in enumerate(body.pairs)]
    judgments = await drive_async(svc.catalogue.pairwise(name).steps(pairs))
    results = [pair_result(p.id, j) for p, j in zip(pairs, judgments)]
    for r in results:
        svc.metrics.labels.labels("sync", "unlabeled" if r.label is None else ("tie" if r.label == "tie" else "labeled")).inc()
    reply = PairwiseReply(judge=name, results=results, usage=Usage.of(results))
    return Response(reply.model_dump_json(), media_type="application/json")


@router.post("/v1/judge/pointwise", response_model=PointwiseReply, openapi_extra=documented(PointwiseRequest))
async def judge_pointwise(request: Request, owner: str = Owner) -> Response:
    """Score a few responses now, each alone on the judge's rubric (its scale: `min_score`-`max_score`)."""
    body = await read_body(request, PointwiseRequest)
    svc = service_of(request)
    name = judge_name(svc, body.judge, "pointwise")
    items = [ScoreItem(id=i.id or str(n), prompt=i.prompt, response=i.response) for n, i in enumerate(body.items)]
    records = await drive_async(svc.catalogue.pointwise(name).score_steps(items))
    results = [item_result(item.id, record) for item, record in zip(items, records)]
    reply = PointwiseReply(judge=name, results=results, usage=Usage.of(results))
    return Response(reply.model_dump_json(), media_type="application/json")
