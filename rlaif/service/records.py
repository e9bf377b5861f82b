"""The service's typed job records: what the job store hands the routes and the scheduler, and what the API shows.

    FileObject   an upload or a job's output file (OpenAI's file object)
    BatchJob     a bulk labeling job (OpenAI's batch object, plus rlaif's own fields)
    AuditJob     an audit of a judge against human labels
    Campaign     a labeling campaign (the calibration sample people label in the browser)
    Task         one leasable piece of a job: validate a batch's input, label one chunk, finalize; or run an audit

Rows of the store become these records at the store's edge (`JobStore`); no dict row crosses a module boundary.
A job's status moves one way along its enum; a task moves todo -> leased -> done (or cancelled), and a lease that
ran out (its worker died) makes the task leasable again.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = [
    "BatchStatus", "AuditStatus", "TaskKind", "TaskState", "FileObject", "BatchJob", "AuditJob", "Campaign", "Task",
    "HumanLabel", "ACTIVE_BATCH", "ACTIVE_AUDIT", "FINALIZE_IDX", "window_seconds",
]


class BatchStatus(StrEnum):
    validating = "validating"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"


class AuditStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class TaskKind(StrEnum):
    validate = "validate"
    label = "label"
    finalize = "finalize"
    audit = "audit"


class TaskState(StrEnum):
    todo = "todo"
    leased = "leased"
    done = "done"
    cancelled = "cancelled"


ACTIVE_BATCH = (BatchStatus.validating, BatchStatus.in_progress, BatchStatus.finalizing, BatchStatus.cancelling)
ACTIVE_AUDIT = (AuditStatus.queued, AuditStatus.running)

FINALIZE_IDX = 1 << 30
"""A batch's finalize task's index: after every chunk's."""

_WINDOW = re.compile(r"^(\d{1,6})([smh])$")


def window_seconds(window: str) -> int:
    """A completion window ("24h", "30m", "90s") in seconds; ValueError for anything else."""
    found = _WINDOW.match(window.strip())
    if not found or int(found.group(1)) <= 0:
        raise ValueError(f"completion_window {window!r}: give a duration such as 24h (hours), 30m or 90s")
    return int(found.group(1)) * {"s": 1, "m": 60, "h": 3600}[found.group(2)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class FileObject(_Row):
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    path: str
    """Relative to the service directory."""

    def api(self) -> dict[str, Any]:
        """As OpenAI's API describes a file."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


class BatchJob(_Row):
    id: str
    owner: str
    endpoint: str
    input_file_id: str
    judge: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    stop_reason: str | None = None
    """Why the batch is being stopped before its work is done: "cancel" or "expire"."""
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    chunks: int = 0
    errors: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    summary: dict[str, Any] | None = None

    _json = field_validator("errors", "metadata", "summary", mode="before")(_json_field)

    @property
    def pairwise(self) -> bool:
        return self.endpoint == "/v1/judge/pairwise"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_BATCH


class AuditJob(_Row):
    id: str
    owner: str
    status: AuditStatus
    request: dict[str, Any]
    created_at: int
    finished_at: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    _json = field_validator("request", "result", mode="before")(_json_field)

    def api(self) -> dict[str, Any]:
        done = self.status == AuditStatus.completed
        return {"id": self.id, "object": "audit", "status": self.status.value, "created_at": self.created_at,
                "finished_at": self.finished_at, "error": self.error, "request": self.request, "result": self.result,
                "report_url": f"/v1/audits/{self.id}/report" if done else None,
                "metrics_url": f"/v1/audits/{self.id}/metrics.json" if done else None}


class Campaign(_Row):
    id: str
    owner: str
    batch_id: str
    strategy: str
    n: int
    seed: int
    created_at: int
    audit_id: str | None = None


class HumanLabel(_Row):
    item_id: str
    annotator: str
    label: str
    created_at: int


class Task(_Row):
    """One leasable piece of a job. `token` changes with every lease: a worker that lost its lease cannot finish
    (or renew) the task another worker now holds."""

    job_id: str
    idx: int
    kind: TaskKind
    owner: str
    state: TaskState
    worker: str | None = None
    token: str | None = None
    lease_until: float | None = None
    attempts: int = 0
    created_at: int
    lines: int = 0
    """Request lines of the batch input this task covers (label tasks)."""

    @property
    def name(self) -> str:
        return f"{self.job_id}/{self.kind.value}#{self.idx}"
