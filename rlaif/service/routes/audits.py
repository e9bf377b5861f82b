"""/v1/audits: a judge against human labels (a gold file judged now, a gold file against a finished batch's labels,
or a labeling campaign's human labels against its batch), with metrics.json and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from rlaif.service.http import Owner, api_error, job_slot, service_of
from rlaif.service.pages import report_page
from rlaif.service.paths import audit_folder
from rlaif.service.records import AuditJob, AuditStatus, BatchStatus
from rlaif.service.routes.batches import owned_batch
from rlaif.service.routes.files import owned_file
from rlaif.service.routes.judging import judge_name
from rlaif.service.schemas import AuditCreate
from rlaif.service.state import Service
from rlaif.service.store import new_id, now

__all__ = ["router", "start_audit"]

router = APIRouter(tags=["audits"])


def start_audit(svc: Service, owner: str, request: AuditCreate) -> AuditJob:
    """Queue an audit job (the API's and the labeling page's)."""
    job_slot(svc, owner)
    audit = AuditJob(id=new_id("audit"), owner=owner, status=AuditStatus.queued, request=request.model_dump(),
                     created_at=now())
    svc.store.audits.add(audit)
    svc.scheduler.wake()
    return audit


@router.post("/v1/audits")
def create_audit(body: AuditCreate, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Audit a judge against human labels: a gold file judged now, a gold file against a finished batch's labels,
    or a labeling campaign's human labels against its batch's labels."""
    svc = service_of(request)
    if bool(body.gold_file_id) == bool(body.campaign_id):
        raise api_error(422, "give gold_file_id (a gold set uploaded with purpose=gold) or campaign_id", "invalid_request")
    if body.gold_file_id:
        owned_file(request, body.gold_file_id, owner)
    if body.batch_id:
        batch = owned_batch(request, body.batch_id, owner)
        if batch.status != BatchStatus.completed or not batch.pairwise:
            raise api_error(409, f"batch {body.batch_id} is a {batch.status.value} {batch.endpoint} batch; an audit "
                                 "needs a completed pairwise batch", "batch_not_ready")
    if body.campaign_id and svc.store.campaigns.get(body.campaign_id, owner) is None:
        raise api_error(404, f"no campaign {body.campaign_id!r}", "campaign_not_found")
    if body.judge is not None:
        judge_name(svc, body.judge, "pairwise")
    return start_audit(svc, owner, body).api()


def _owned(request: Request, audit_id: str, owner: str) -> AuditJob:
    found = service_of(request).store.audits.get(audit_id, owner)
    if found is None:
        raise api_error(404, f"no audit {audit_id!r}", "audit_not_found")
    return found


def _finished(request: Request, audit_id: str, owner: str) -> Path:
    audit = _owned(request, audit_id, owner)
    if audit.status != AuditStatus.completed:
        raise api_error(409, f"audit {audit_id} is {audit.status.value}" + (f": {audit.error}" if audit.error else ""),
                        "audit_not_ready")
    return audit_folder(service_of(request).settings, audit.id)


@router.get("/v1/audits/{audit_id}")
def get_audit(audit_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    return _owned(request, audit_id, owner).api()


@router.get("/v1/audits/{audit_id}/metrics.json")
def audit_metrics(audit_id: str, request: Request, owner: str = Owner) -> FileResponse:
    return FileResponse(_finished(request, audit_id, owner) / "metrics.json", media_type="application/json")


@router.get("/v1/audits/{audit_id}/report", response_class=HTMLResponse)
def audit_report(audit_id: str, request: Request, owner: str = Owner) -> HTMLResponse:
    return report_page(_finished(request, audit_id, owner))
