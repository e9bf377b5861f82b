"""What the routes share: the error shape, the caller's key, the job cap, and bodies read before they are parsed."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from rlaif.service.settings import KeyRing
from rlaif.service.state import Service

__all__ = ["api_error", "service_of", "owner_of", "Owner", "job_slot", "read_body", "documented", "ITEM_FIELDS"]

B = TypeVar("B", bound=BaseModel)

ITEM_FIELDS = ("pairs", "items", "prompts", "completions", "references", "query", "labels")
"""The list fields of request bodies that the per-request item cap applies to."""


def api_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> HTTPException:
    """An error in OpenAI's shape: {"error": {"message", "type", "code", "param"}}."""
    return HTTPException(status, detail={"message": message, "type": "invalid_request_error" if status < 500
                                         else "server_error", "code": code, "param": None}, headers=headers)


def service_of(request: Request) -> Service:
    return request.app.state.service


async def owner_of(request: Request) -> str:
    """The caller's key name; 401 without a valid bearer key."""
    keys: KeyRing = request.app.state.keys
    owner = keys.owner(request.headers.get("authorization"))
    if owner is None:
        raise api_error(401, "missing or invalid API key: send `Authorization: Bearer KEY`", "invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})
    request.state.owner = owner
    return owner


Owner = Depends(owner_of)


def job_slot(service: Service, owner: str) -> None:
    if service.store.active_jobs(owner) >= service.settings.max_jobs_per_key:
        raise api_error(429, f"this key already has {service.settings.max_jobs_per_key} batches or audits queued or "
                             "running; wait for one to finish", "too_many_jobs", headers={"Retry-After": "30"})


def too_many(n: int, what: str, limit: int) -> HTTPException:
    return api_error(413, f"{n} {what} in one request; at most {limit} (use /v1/files + /v1/batches for bulk work)",
                     "too_many_items")


async def read_body(request: Request, model: type[B]) -> B:
    """The JSON body as `model`. The item cap is checked on the decoded JSON before any item is validated (a body of
    250,000 empty items is refused in milliseconds, not after validating each), then pydantic validates it in one
    pass; errors answer as FastAPI's would."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "invalid JSON"}]) from None
    if isinstance(data, dict):
        limit = service_of(request).settings.max_items
        for name in ITEM_FIELDS:
            value = data.get(name)
            if isinstance(value, list) and len(value) > limit:
                raise too_many(len(value), name, limit)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False, include_input=False)) from None


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` naming a route's JSON body for /docs when the route reads it itself (see `read_body`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}
