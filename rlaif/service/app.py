"""The `rlaif serve` app (FastAPI): the middleware, the error shape, and one router per resource (rlaif.service.routes).

Every route but /health needs a bearer key when the service has keys; a key sees only its own files, batches,
audits and campaigns (404 for anyone else's). Every error, 404 and 405 included, answers in OpenAI's shape
{"error": {"message", "type", "code", "param"}}.

With `--workers N` each worker process builds its app with `app_from_environment` (uvicorn's factory), from the
settings the `rlaif serve` command left in its environment.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlaif.service.guards import Accounting, BodyLimit, DocsKey, JsonOnly, LocalOnly, error_body
from rlaif.service.routes import ROUTERS
from rlaif.service.schemas import PairwiseRequest, PointwiseRequest
from rlaif.service.settings import KeyRing, ServiceSettings, load_keys
from rlaif.service.state import Service

__all__ = ["create_app", "app_from_environment", "SETTINGS_ENV"]

SETTINGS_ENV = "RLAIF_SERVE_SETTINGS"
"""The settings (JSON) and keys file a worker process of `rlaif serve --workers N` builds its app from."""

log = logging.getLogger("rlaif.service")

_STATUS_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.detail, dict):
        detail = exc.detail
    elif exc.status_code in _STATUS_CODES:
        what = "no such route" if exc.status_code == 404 else f"{request.method} is not allowed on this route"
        detail = error_body(f"{what}: {request.method} {request.url.path} (see /docs)", _STATUS_CODES[exc.status_code])
    else:
        detail = error_body(str(exc.detail), "http_error")
    return JSONResponse({"error": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: a 500 in the error shape (the traceback goes to the log, never to the client)."""
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return JSONResponse({"error": {**error_body("internal error; the service log has the details", "internal_error"),
                                   "type": "server_error"}}, status_code=500)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"error": error_body("the body is not valid JSON", "invalid_json")}, status_code=400)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    message = f"{where}: {first.get('msg')}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return JSONResponse({"error": {**error_body(message, "invalid_request"), "param": where}}, status_code=422)


def create_app(settings: ServiceSettings, keys: KeyRing, service: Service | None = None) -> FastAPI:
    """The app; the service (engines, job store, scheduler) starts with it unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Waiting synchronous judge requests hold no thread (they await the engine worker), but the reward and file
        # routes run in threads: more than the default 40, so a burst of them does not stall /health and the rest.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        own = service is None
        app.state.service = Service.start(settings, keys) if own else service
        log.info("rlaif worker %d ready on %s:%s with judges %s (bulk: %s)", os.getpid(), settings.host, settings.port,
                 ", ".join(app.state.service.catalogue.specs), app.state.service.executor.name)
        try:
            yield
        finally:
            if own:
                app.state.service.close()

    app = FastAPI(title="rlaif", version="0.1.0", lifespan=lifespan,
                  description="Constitutional LLM judges as a service: synchronous judging and rewards, bulk labeling "
                              "jobs (a subset of OpenAI's Batch API) on the scale-out executors, audits against human "
                              "labels, and a labeling page.")
    app.state.keys = keys
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(JsonOnly)
    app.add_middleware(DocsKey, keys=keys)
    app.add_middleware(LocalOnly, keys=keys)
    app.add_middleware(Accounting)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _server_error)
    for router in ROUTERS:
        app.include_router(router)
    _document_bodies(app, (PairwiseRequest, PointwiseRequest))
    return app


def _document_bodies(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Put the bodies the hot routes read themselves (`http.read_body`) into the OpenAPI components."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(found.pop("$defs", {}))
                components[model.__name__] = found
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """A worker process's app (uvicorn factory): settings and the keys file from `RLAIF_SERVE_SETTINGS`, keys from
    RLAIF_API_KEYS as for `rlaif serve` itself."""
    data = json.loads(os.environ[SETTINGS_ENV])
    keys = KeyRing(load_keys(data.pop("keys_file", None)))
    return create_app(ServiceSettings.model_validate(data), keys)
