"""/v1/batches: bulk labeling jobs over an uploaded JSONL file of judge requests (a subset of OpenAI's Batch API),
run in chunks by every worker of the service; the preference dataset of a pairwise batch downloads as Parquet or
JSONL."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from rlaif.service.http import Owner, api_error, job_slot, service_of
from rlaif.service.paths import batch_folder
from rlaif.service.records import BatchJob, BatchStatus, window_seconds
from rlaif.service.routes.files import owned_file
from rlaif.service.routes.judging import judge_name
from rlaif.service.schemas import JUDGE_ENDPOINTS, BatchCreate
from rlaif.service.state import Service
from rlaif.service.store import new_id, now

__all__ = ["router", "owned_batch"]

router = APIRouter(tags=["batches"])


def batch_object(batch: BatchJob) -> dict[str, Any]:
    downloads = {}
    if batch.status in (BatchStatus.completed, BatchStatus.cancelled, BatchStatus.expired) and batch.pairwise:
        downloads = {"dataset_parquet": f"/v1/batches/{batch.id}/dataset.parquet",
                     "preferences_jsonl": f"/v1/batches/{batch.id}/preferences.jsonl"}
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": batch.errors,
        "input_file_id": batch.input_file_id, "completion_window": batch.completion_window, "status": batch.status.value,
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id, "created_at": batch.created_at,
        "in_progress_at": batch.in_progress_at, "expires_at": batch.expires_at, "finalizing_at": batch.finalizing_at,
        "completed_at": batch.completed_at, "failed_at": batch.failed_at, "expired_at": batch.expired_at,
        "cancelling_at": batch.cancelling_at, "cancelled_at": batch.cancelled_at,
        "request_counts": {"total": batch.total, "completed": batch.completed, "failed": batch.failed},
        "metadata": batch.metadata or None,
        "rlaif": {"judge": batch.judge, "summary": batch.summary, "downloads": downloads, "chunks": batch.chunks,
                  "run_folder": batch.id},
    }


def owned_batch(request: Request, batch_id: str, owner: str) -> BatchJob:
    found = service_of(request).store.batches.get(batch_id, owner)
    if found is None:
        raise api_error(404, f"no batch {batch_id!r}", "batch_not_found")
    return found


def _first_line_judge(svc: Service, file_id: str) -> str | None:
    """The judge the first line of a batch input names in its body, if any."""
    try:
        with svc.files.path(file_id).open(encoding="utf-8", errors="replace") as fh:
            first = next((line for line in fh if line.strip()), "")
        data = json.loads(first) if first else {}
    except (OSError, ValueError):
        return None
    body = data.get("body") if isinstance(data, dict) else None
    judge = body.get("judge") if isinstance(body, dict) else None
    return judge if isinstance(judge, str) else None


@router.post("/v1/batches")
def create_batch(body: BatchCreate, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Start a bulk labeling job over an uploaded JSONL file of /v1/judge/pairwise (or pointwise) requests. It must
    finish within `completion_window` (e.g. 24h); what is not done by then ends `expired`, with the finished part."""
    svc = service_of(request)
    if body.endpoint not in JUDGE_ENDPOINTS:
        raise api_error(400, f"endpoint {body.endpoint!r}: this service batches {' and '.join(JUDGE_ENDPOINTS)}",
                        "invalid_endpoint")
    try:
        window = window_seconds(body.completion_window)
    except ValueError as exc:
        raise api_error(400, str(exc), "invalid_completion_window") from None
    owned_file(request, body.input_file_id, owner)
    mode = "pairwise" if body.endpoint == JUDGE_ENDPOINTS[0] else "pointwise"
    judge = judge_name(svc, (body.metadata or {}).get("judge") or _first_line_judge(svc, body.input_file_id), mode)
    job_slot(svc, owner)
    created = now()
    batch = BatchJob(id=new_id("batch"), owner=owner, endpoint=body.endpoint, input_file_id=body.input_file_id, judge=judge,
                     completion_window=body.completion_window, status=BatchStatus.validating, created_at=created,
                     expires_at=created + window, metadata=body.metadata)
    svc.store.batches.add(batch)
    svc.scheduler.wake()
    return batch_object(batch)


@router.get("/v1/batches")
def list_batches(request: Request, owner: str = Owner, limit: int = 20, after: str | None = None) -> dict[str, Any]:
    limit = max(1, min(limit, 100))
    data = [batch_object(b) for b in service_of(request).store.batches.owned(owner, limit, after)]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(data) == limit}


@router.get("/v1/batches/{batch_id}")
def get_batch(batch_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    return batch_object(owned_batch(request, batch_id, owner))


@router.post("/v1/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Cancel a batch: waiting chunks are dropped, the chunk in flight stops at its next engine slice, and the
    batch ends `cancelled` with the work finished so far in its output file and dataset."""
    svc = service_of(request)
    batch = owned_batch(request, batch_id, owner)
    if svc.store.batches.stop(batch.id, "cancel"):
        svc.scheduler.wake()
    return batch_object(svc.store.batches.get(batch.id) or batch)


def _batch_file(request: Request, batch_id: str, owner: str, name: str, media: str) -> FileResponse:
    batch = owned_batch(request, batch_id, owner)
    path = batch_folder(service_of(request).settings, batch.id) / name
    if batch.active or not path.is_file():
        raise api_error(404, f"batch {batch_id} has no {name} (yet): it is {batch.status.value}; pairwise batches write "
                             "it when they finish", "not_ready")
    return FileResponse(path, media_type=media, filename=f"{batch_id}_{name}")


@router.get("/v1/batches/{batch_id}/dataset.parquet")
def batch_parquet(batch_id: str, request: Request, owner: str = Owner) -> FileResponse:
    return _batch_file(request, batch_id, owner, "dataset.parquet", "application/vnd.apache.parquet")


@router.get("/v1/batches/{batch_id}/preferences.jsonl")
def batch_preferences(batch_id: str, request: Request, owner: str = Owner) -> FileResponse:
    return _batch_file(request, batch_id, owner, "preferences.jsonl", "application/jsonl")
