"""What the routes share: the error shape, the caller's key, the job cap, audits and their report pages."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from fastapi import Depends, HTTPException, Request

from rlaif.service.db import dumps, loads, new_id, now
from rlaif.service.settings import KeyRing
from rlaif.service.state import Service

__all__ = ["api_error", "service_of", "owner_of", "Owner", "job_slot", "report_html", "audit_object", "start_audit"]


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
    if service.db.active_jobs(owner) >= service.settings.max_jobs_per_key:
        raise api_error(429, f"this key already has {service.settings.max_jobs_per_key} batches or audits queued or "
                             "running; wait for one to finish", "too_many_jobs", headers={"Retry-After": "30"})


def report_html(folder: Path) -> str:
    """report.html with its plots inlined, so one authenticated GET shows the whole report."""
    page = (folder / "report.html").read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        name = match.group(1)
        path = folder / name
        if "/" in name or not path.is_file():
            return match.group(0)
        return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    return re.sub(r'<img src="([^"]+)"', inline, page)


def audit_object(row: dict[str, Any]) -> dict[str, Any]:
    done = row["status"] == "completed"
    return {"id": row["id"], "object": "audit", "status": row["status"], "created_at": row["created_at"],
            "finished_at": row["finished_at"], "error": row["error"], "request": loads(row["request"]),
            "result": loads(row["result"]),
            "report_url": f"/v1/audits/{row['id']}/report" if done else None,
            "metrics_url": f"/v1/audits/{row['id']}/metrics.json" if done else None}


def start_audit(svc: Service, owner: str, request: dict[str, Any]) -> dict[str, Any]:
    """Queue an audit job (the API's and the labeling page's)."""
    audit_id = new_id("audit")
    svc.db.insert("audits", {"id": audit_id, "owner": owner, "status": "queued", "request": dumps(request),
                             "created_at": now()})
    svc.runner.submit("audit", audit_id)
    return svc.db.get("audits", audit_id) or {}
