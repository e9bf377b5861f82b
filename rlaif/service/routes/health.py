"""/health (no key), /v1/judges and /v1/models: what this service serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from rlaif.service.http import Owner, service_of

router = APIRouter(tags=["service"])


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    svc = service_of(request)
    return {"status": "ok", "judges": list(svc.catalogue.specs), "queue": svc.engines.queue_depth(),
            "executor": svc.executor.name, "tasks": svc.store.tasks.waiting()}


@router.get("/v1/judges", tags=["judging"])
def judges(request: Request, owner: str = Owner) -> dict[str, Any]:
    """The judges this service was started with: mode, template and constitution versions, model, fingerprint."""
    return {"object": "list", "data": service_of(request).catalogue.describe()}


@router.get("/v1/models", tags=["judging"])
def models(request: Request, owner: str = Owner) -> dict[str, Any]:
    """The judges as OpenAI model objects: the `id` is what a request names as its `judge`."""
    return {"object": "list", "data": service_of(request).catalogue.models()}
