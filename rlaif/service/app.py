"""The routes of `rlaif serve` (FastAPI). Every route but /health needs a bearer key (when the service has keys);
a key sees only its own files, batches, audits and campaigns (404 for anyone else's)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlaif.judging.pointwise import ScoreItem
from rlaif.records import CandidatePair
from rlaif.service.catalogue import UnknownJudge
from rlaif.service.db import dumps, loads, new_id, now, valid_id
from rlaif.service.engines import drive_async
from rlaif.service.files import file_object
from rlaif.service.http import (
    Owner,
    api_error,
    audit_object,
    job_slot,
    report_html,
    service_of,
    start_audit,
)
from rlaif.service.paths import audit_folder, batch_folder
from rlaif.service.results import item_result, pair_result
from rlaif.service.schemas import (
    JUDGE_ENDPOINTS,
    AuditCreate,
    BatchCreate,
    OpenRLHFRewardRequest,
    PairwiseReply,
    PairwiseRequest,
    PointwiseReply,
    PointwiseRequest,
    RewardReply,
    RewardRequest,
    Usage,
)
from rlaif.service.settings import KeyRing, ServiceSettings
from rlaif.service.state import Service

__all__ = ["create_app"]

B = TypeVar("B", bound=BaseModel)

_END_OF_TURN = re.compile(r"(?:\s*(?:<\|[A-Za-z0-9_]+\|>|</s>|<eos>))+\s*$")
"""Special tokens that end a turn, left on a response that OpenRLHF decoded with skip_special_tokens=False."""

log = logging.getLogger("rlaif.service")
access = logging.getLogger("rlaif.service.access")


class _TooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, detail={"message": f"request body larger than {limit} bytes; send less per request "
                                                 "(or use /v1/files + /v1/batches for bulk work)",
                                      "type": "invalid_request_error", "code": "request_too_large", "param": None})


class BodyLimit:
    """413 for a body over the route's limit, by Content-Length or while it streams in (chunked uploads)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_file_bytes + 65536 if scope["path"] == "/v1/files" else self.settings.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, _TooLarge(limit).detail)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        await self.app(scope, limited, send)


class Accounting:
    """One log line per request (route template, status, time, key name: never a text, a token or a key) and the
    request metrics. A plain ASGI middleware: it adds no task or thread to a request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            svc = getattr(scope["app"].state, "service", None) if "app" in scope else None
            if svc is not None:
                svc.metrics.observe(template, status, seconds)
            if access.isEnabledFor(logging.INFO):
                access.info("%s %s %d %.1f ms %s", scope["method"], template, status, seconds * 1000,
                            (scope.get("state") or {}).get("owner", "-"))


async def _send_json(send: Send, status: int, detail: Any) -> None:
    body = JSONResponse({"error": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _body(request: Request, model: type[B]) -> B:
    """The JSON body as `model`, parsed and validated in one pass by pydantic (the hot routes skip FastAPI's
    own body handling, about a tenth of a one-pair request's time); errors answer as FastAPI's would."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False, include_input=False)) from None


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` naming a route's JSON body for /docs when the route reads it itself (see `_body`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _cap(service: Service, n: int, what: str) -> None:
    if n > service.settings.max_items:
        raise api_error(413, f"{n} {what} in one request; at most {service.settings.max_items} "
                             "(use /v1/files + /v1/batches for bulk work)", "too_many_items")


def _judge_name(service: Service, requested: str | None, mode: str) -> str:
    try:
        return service.catalogue.name(requested, mode)
    except UnknownJudge as exc:
        raise api_error(404, str(exc), "judge_not_found") from None


def _count_labels(service: Service, results: list) -> None:
    for r in results:
        outcome = "unlabeled" if r.label is None else ("tie" if r.label == "tie" else "labeled")
        service.metrics.labels.labels("sync", outcome).inc()


def _batch_object(service: Service, row: dict[str, Any]) -> dict[str, Any]:
    folder = batch_folder(service.settings, row["id"])
    downloads = {}
    if row["status"] in ("completed", "cancelled") and row["endpoint"] == JUDGE_ENDPOINTS[0]:
        downloads = {"dataset_parquet": f"/v1/batches/{row['id']}/dataset.parquet",
                     "preferences_jsonl": f"/v1/batches/{row['id']}/preferences.jsonl"}
    metadata = loads(row["metadata"]) or {}
    return {
        "id": row["id"], "object": "batch", "endpoint": row["endpoint"], "errors": loads(row["errors"]),
        "input_file_id": row["input_file_id"], "completion_window": row["completion_window"], "status": row["status"],
        "output_file_id": row["output_file_id"], "error_file_id": row["error_file_id"], "created_at": row["created_at"],
        "in_progress_at": row["in_progress_at"], "expires_at": row["created_at"] + 86400, "finalizing_at": row["finalizing_at"],
        "completed_at": row["completed_at"], "failed_at": row["failed_at"], "expired_at": None,
        "cancelling_at": row["cancelling_at"], "cancelled_at": row["cancelled_at"],
        "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
        "metadata": metadata or None,
        "rlaif": {"judge": row["judge"], "summary": loads(row["summary"]), "downloads": downloads,
                  "run_folder": folder.name},
    }


def create_app(settings: ServiceSettings, keys: KeyRing, service: Service | None = None) -> FastAPI:
    """The app; the service (engines, database, job runner) starts with it unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Waiting synchronous judge requests hold no thread (they await the engine worker), but the reward and file
        # routes run in threads: more than the default 40, so a burst of them does not stall /health and the rest.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        own = service is None
        app.state.service = Service.start(settings, keys) if own else service
        log.info("rlaif service ready on %s:%s with judges %s", settings.host, settings.port,
                 ", ".join(app.state.service.catalogue.specs))
        try:
            yield
        finally:
            if own:
                app.state.service.close()

    app = FastAPI(title="rlaif", version="0.1.0", lifespan=lifespan,
                  description="Constitutional LLM judges as a service: synchronous judging and rewards, bulk labeling "
                              "jobs (a subset of OpenAI's Batch API), audits against human labels, and a labeling page.")
    app.state.keys = keys
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(Accounting)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail), "type": "invalid_request_error",
                                                                  "code": None, "param": None}
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"error": {"message": "the body is not valid JSON", "type": "invalid_request_error",
                                           "code": "invalid_json", "param": None}}, status_code=400)
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse({"error": {"message": f"{where}: {first.get('msg')}" + (
            f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""), "type": "invalid_request_error",
            "code": "invalid_request", "param": where}}, status_code=422)

    @app.get("/health", tags=["service"])
    def health(request: Request) -> dict[str, Any]:
        svc = service_of(request)
        return {"status": "ok", "judges": list(svc.catalogue.specs), "queue": svc.engines.queue_depth()}

    @app.get("/v1/judges", tags=["judging"])
    def judges(request: Request, owner: str = Owner) -> dict[str, Any]:
        return {"object": "list", "data": service_of(request).catalogue.describe()}

    @app.post("/v1/judge/pairwise", response_model=PairwiseReply, tags=["judging"],
              openapi_extra=_documented(PairwiseRequest))
    async def judge_pairwise(request: Request, owner: str = Owner) -> Response:
        """Judge a few pairs now (both orders, each principle): one result per pair, in order. Concurrent requests
        share engine calls (micro-batching) and go ahead of bulk jobs."""
        body = await _body(request, PairwiseRequest)
        svc = service_of(request)
        _cap(svc, len(body.pairs), "pairs")
        name = _judge_name(svc, body.judge, "pairwise")
        pairs = [CandidatePair(id=p.id or str(i), prompt=p.prompt, response_1=p.response_1, response_2=p.response_2)
                 for i, p in enumerate(body.pairs)]
        judgments = await drive_async(svc.catalogue.pairwise(name).steps(pairs))
        results = [pair_result(p.id, j) for p, j in zip(pairs, judgments)]
        _count_labels(svc, results)
        reply = PairwiseReply(judge=name, results=results, usage=Usage.of(results))
        return Response(reply.model_dump_json(), media_type="application/json")

    @app.post("/v1/judge/pointwise", response_model=PointwiseReply, tags=["judging"],
              openapi_extra=_documented(PointwiseRequest))
    async def judge_pointwise(request: Request, owner: str = Owner) -> Response:
        """Score a few responses now, each alone on the judge's rubric."""
        body = await _body(request, PointwiseRequest)
        svc = service_of(request)
        _cap(svc, len(body.items), "items")
        name = _judge_name(svc, body.judge, "pointwise")
        items = [ScoreItem(id=i.id or str(n), prompt=i.prompt, response=i.response) for n, i in enumerate(body.items)]
        records = await drive_async(svc.catalogue.pointwise(name).score_steps(items))
        results = [item_result(item.id, record) for item, record in zip(items, records)]
        reply = PointwiseReply(judge=name, results=results, usage=Usage.of(results))
        return Response(reply.model_dump_json(), media_type="application/json")

    def _rewards(svc: Service, judge: str | None, prompts: list[str], completions: list[str],
                 references: list[str] | None) -> RewardReply:
        if len(prompts) != len(completions) or (references is not None and len(references) != len(completions)):
            raise api_error(422, "prompts, completions (and references) must have one entry per completion",
                            "length_mismatch")
        _cap(svc, len(completions), "completions")
        if references is not None:
            from rlaif.train.judge_reward import JudgeReward

            name = _judge_name(svc, judge, "pairwise")
            reward = JudgeReward(svc.catalogue.pairwise(name))
            values = reward(prompts, completions, reference=references)
            for value in values:
                svc.metrics.labels.labels("sync", "unlabeled" if value is None else "labeled").inc()
            return RewardReply(judge=name, kind="pairwise_vs_reference", rewards=values, reasons=reward.last_reasons)
        name = _judge_name(svc, judge, "pointwise")
        planned = [ScoreItem(id=str(i), prompt=p, response=c) if p.strip() and c.strip() else None
                   for i, (p, c) in enumerate(zip(prompts, completions))]
        records = iter(svc.catalogue.pointwise(name).score([x for x in planned if x is not None]))
        rewards: list[float | None] = []
        reasons: list[str | None] = []
        for item in planned:
            record = next(records) if item is not None else None
            if record is None:
                rewards.append(None)
                reasons.append("empty prompt or completion")
            else:
                rewards.append(record.score if record.scored else None)
                reasons.append(None if record.scored else (record.reason or "unscored"))
        return RewardReply(judge=name, kind="pointwise_score", rewards=rewards, reasons=reasons)

    @app.post("/v1/reward", response_model=RewardReply, tags=["rewards"])
    def reward(body: RewardRequest, request: Request, owner: str = Owner) -> RewardReply:
        """One reward per completion: P(completion better than its reference) with a pairwise judge when
        `references` are given, else a pointwise judge's score; null with the reason when unreadable."""
        return _rewards(service_of(request), body.judge, body.prompts, body.completions, body.references)

    @app.post("/get_reward", tags=["rewards"])
    def get_reward(body: OpenRLHFRewardRequest, request: Request, owner: str = Owner) -> dict[str, Any]:
        """OpenRLHF's remote reward shape: {"query": [prompt + response], "prompts": [...], "labels": [...]} ->
        {"rewards": [...]}; `labels` (reference responses) make it a pairwise reward, else pointwise."""
        if body.prompts is None or len(body.prompts) != len(body.query):
            raise api_error(422, "send `prompts` (one per query) so the response can be cut from each query",
                            "prompts_required")
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
        reply = _rewards(service_of(request), None, list(body.prompts), completions, references)
        return {"rewards": reply.rewards, "scores": reply.rewards, "reasons": reply.reasons, "judge": reply.judge}

    # files ------------------------------------------------------------------------------------------------
    @app.post("/v1/files", tags=["batches"])
    def upload(request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()] = "batch",
               owner: str = Owner) -> dict[str, Any]:
        """Upload a JSONL file (a batch input, or a gold set for an audit)."""
        svc = service_of(request)
        if purpose not in ("batch", "gold", "user_data"):
            raise api_error(400, f"purpose {purpose!r}: use batch (a batch input) or gold (a gold set)", "invalid_purpose")
        file_id = new_id("file")
        target = svc.files.upload_path(file_id)
        size = 0
        try:
            with target.open("wb") as out:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > svc.settings.max_file_bytes:
                        raise _TooLarge(svc.settings.max_file_bytes)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return file_object(svc.files.add_upload(file_id, owner, purpose, Path(file.filename or "upload.jsonl").name, size))

    @app.get("/v1/files", tags=["batches"])
    def list_files(request: Request, owner: str = Owner) -> dict[str, Any]:
        rows = service_of(request).db.owned("files", owner)
        return {"object": "list", "data": [file_object(r) for r in rows], "has_more": False}

    def _file(request: Request, file_id: str, owner: str) -> dict[str, Any]:
        row = service_of(request).files.get(file_id, owner)
        if row is None:
            raise api_error(404, f"no file {file_id!r}", "file_not_found")
        return row

    @app.get("/v1/files/{file_id}", tags=["batches"])
    def get_file(file_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
        return file_object(_file(request, file_id, owner))

    @app.get("/v1/files/{file_id}/content", tags=["batches"])
    def file_content(file_id: str, request: Request, owner: str = Owner) -> FileResponse:
        row = _file(request, file_id, owner)
        return FileResponse(service_of(request).files.path(row["id"]), media_type="application/jsonl")

    # batches ----------------------------------------------------------------------------------------------
    @app.post("/v1/batches", tags=["batches"])
    def create_batch(body: BatchCreate, request: Request, owner: str = Owner) -> dict[str, Any]:
        """Start a bulk labeling job over an uploaded JSONL file of /v1/judge/pairwise (or pointwise) requests."""
        svc = service_of(request)
        if body.endpoint not in JUDGE_ENDPOINTS:
            raise api_error(400, f"endpoint {body.endpoint!r}: this service batches {' and '.join(JUDGE_ENDPOINTS)}",
                            "invalid_endpoint")
        _file(request, body.input_file_id, owner)
        mode = "pairwise" if body.endpoint == JUDGE_ENDPOINTS[0] else "pointwise"
        judge = _judge_name(svc, (body.metadata or {}).get("judge") or _first_line_judge(svc, body.input_file_id), mode)
        job_slot(svc, owner)
        batch_id = new_id("batch")
        svc.db.insert("batches", {"id": batch_id, "owner": owner, "endpoint": body.endpoint, "input_file_id": body.input_file_id,
                                  "judge": judge, "completion_window": body.completion_window, "status": "validating",
                                  "created_at": now(), "metadata": dumps(body.metadata)})
        svc.runner.submit("batch", batch_id)
        return _batch_object(svc, svc.db.get("batches", batch_id) or {})

    @app.get("/v1/batches", tags=["batches"])
    def list_batches(request: Request, owner: str = Owner, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        svc = service_of(request)
        rows = svc.db.owned("batches", owner, limit=max(1, min(limit, 100)), after=after)
        data = [_batch_object(svc, r) for r in rows]
        return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None, "has_more": len(data) == limit}

    def _batch(request: Request, batch_id: str, owner: str) -> dict[str, Any]:
        row = service_of(request).db.get("batches", batch_id, owner) if valid_id("batch", batch_id) else None
        if row is None:
            raise api_error(404, f"no batch {batch_id!r}", "batch_not_found")
        return row

    @app.get("/v1/batches/{batch_id}", tags=["batches"])
    def get_batch(batch_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
        return _batch_object(service_of(request), _batch(request, batch_id, owner))

    @app.post("/v1/batches/{batch_id}/cancel", tags=["batches"])
    def cancel_batch(batch_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
        svc = service_of(request)
        row = _batch(request, batch_id, owner)
        if row["status"] in ("validating", "in_progress"):
            svc.db.set_status("batches", batch_id, "cancelling", only_from=("validating", "in_progress"))
            svc.runner.cancel(batch_id)
        return _batch_object(svc, svc.db.get("batches", batch_id) or row)

    @app.get("/v1/batches/{batch_id}/dataset.parquet", tags=["batches"])
    def batch_parquet(batch_id: str, request: Request, owner: str = Owner) -> FileResponse:
        return _batch_file(request, batch_id, owner, "dataset.parquet", "application/vnd.apache.parquet")

    @app.get("/v1/batches/{batch_id}/preferences.jsonl", tags=["batches"])
    def batch_preferences(batch_id: str, request: Request, owner: str = Owner) -> FileResponse:
        return _batch_file(request, batch_id, owner, "preferences.jsonl", "application/jsonl")

    def _batch_file(request: Request, batch_id: str, owner: str, name: str, media: str) -> FileResponse:
        row = _batch(request, batch_id, owner)
        path = batch_folder(service_of(request).settings, row["id"]) / name
        if not path.is_file():
            raise api_error(404, f"batch {batch_id} has no {name} (yet): it is {row['status']}; pairwise batches write "
                                 "it when they finish", "not_ready")
        return FileResponse(path, media_type=media, filename=f"{batch_id}_{name}")

    # audits -----------------------------------------------------------------------------------------------
    @app.post("/v1/audits", tags=["audits"])
    def create_audit(body: AuditCreate, request: Request, owner: str = Owner) -> dict[str, Any]:
        """Audit a judge against human labels: a gold file judged now, a gold file against a finished batch's labels,
        or a labeling campaign's human labels against its batch's labels."""
        svc = service_of(request)
        if bool(body.gold_file_id) == bool(body.campaign_id):
            raise api_error(422, "give gold_file_id (a gold set uploaded with purpose=gold) or campaign_id", "invalid_request")
        if body.gold_file_id:
            _file(request, body.gold_file_id, owner)
        if body.batch_id:
            row = _batch(request, body.batch_id, owner)
            if row["status"] != "completed" or row["endpoint"] != JUDGE_ENDPOINTS[0]:
                raise api_error(409, f"batch {body.batch_id} is a {row['status']} {row['endpoint']} batch; an audit "
                                     "needs a completed pairwise batch", "batch_not_ready")
        if body.campaign_id:
            campaign = svc.db.get("campaigns", body.campaign_id, owner) if valid_id("campaign", body.campaign_id) else None
            if campaign is None:
                raise api_error(404, f"no campaign {body.campaign_id!r}", "campaign_not_found")
        if body.judge is not None:
            _judge_name(svc, body.judge, "pairwise")
        job_slot(svc, owner)
        return audit_object(start_audit(svc, owner, body.model_dump()))

    @app.get("/v1/audits/{audit_id}", tags=["audits"])
    def get_audit(audit_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
        return audit_object(_audit(request, audit_id, owner))

    def _audit(request: Request, audit_id: str, owner: str) -> dict[str, Any]:
        row = service_of(request).db.get("audits", audit_id, owner) if valid_id("audit", audit_id) else None
        if row is None:
            raise api_error(404, f"no audit {audit_id!r}", "audit_not_found")
        return row

    def _audit_done(request: Request, audit_id: str, owner: str) -> Path:
        row = _audit(request, audit_id, owner)
        if row["status"] != "completed":
            raise api_error(409, f"audit {audit_id} is {row['status']}" + (f": {row['error']}" if row["error"] else ""),
                            "audit_not_ready")
        return audit_folder(service_of(request).settings, audit_id)

    @app.get("/v1/audits/{audit_id}/metrics.json", tags=["audits"])
    def audit_metrics(audit_id: str, request: Request, owner: str = Owner) -> FileResponse:
        return FileResponse(_audit_done(request, audit_id, owner) / "metrics.json", media_type="application/json")

    @app.get("/v1/audits/{audit_id}/report", response_class=HTMLResponse, tags=["audits"])
    def audit_report(audit_id: str, request: Request, owner: str = Owner) -> HTMLResponse:
        return HTMLResponse(report_html(_audit_done(request, audit_id, owner)))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["service"])
    def metrics(request: Request, owner: str = Owner) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)

    from rlaif.service.campaigns import campaign_routes

    campaign_routes(app)
    _document_bodies(app, (PairwiseRequest, PointwiseRequest))
    return app


def _document_bodies(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Put the bodies the hot routes read themselves (`_documented`) into the OpenAPI components."""
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


def _first_line_judge(svc: Service, file_id: str) -> str | None:
    """The judge the first line of a batch input names in its body, if any."""
    import json

    try:
        with svc.files.path(file_id).open(encoding="utf-8", errors="replace") as fh:
            first = next((line for line in fh if line.strip()), "")
        data = json.loads(first) if first else {}
        body = data.get("body") if isinstance(data, dict) else None
        judge = body.get("judge") if isinstance(body, dict) else None
        return judge if isinstance(judge, str) else None
    except (OSError, ValueError):
        return None
