"""/metrics: Prometheus text (this worker's requests and engines; the job store's tasks and jobs)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from rlaif.service.http import Owner, service_of

router = APIRouter(tags=["service"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, owner: str = Owner) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(service_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
