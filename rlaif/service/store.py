"""The job store: files, batches, audits, campaigns and their leasable tasks, shared by every worker of a service.

Only metadata lives here; what a job writes goes to its run folder under the service directory (a path every
worker sees), named by the job's id. Ids are made here (a prefix and 24 hex digits, the first 12 a millisecond
stamp so that lists sort newest first) and checked against that shape before any lookup, so a client-given id can
never name a path outside the service directory.

Leasing: a worker takes the next task with one guarded UPDATE (`lease`), so two workers never hold the same task;
the lease runs for `lease_s` seconds and the worker renews it while it works (`renew`). A worker that dies stops
renewing, and once its lease has run out any worker may take the task again. Each lease gets a new token, and only
the token's holder can renew or finish the task. Work is handed out round-robin across keys: the key served
longest ago goes first, so one key's million-pair batch does not hold up another key's small one.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from rlaif.service.database import Database, open_database
from rlaif.service.records import (
    ACTIVE_AUDIT,
    ACTIVE_BATCH,
    FINALIZE_IDX,
    AuditJob,
    AuditStatus,
    BatchJob,
    BatchStatus,
    Campaign,
    FileObject,
    HumanLabel,
    Task,
    TaskKind,
    TaskState,
)

__all__ = ["JobStore", "Files", "Batches", "Audits", "Campaigns", "Tasks", "new_id", "valid_id", "now"]

_PREFIX = {"file": "file-", "batch": "batch_", "audit": "audit_", "campaign": "campaign_"}


_last_stamp = 0
_stamp_lock = threading.Lock()


def new_id(kind: str) -> str:
    """A new id: 12 hex digits of milliseconds since the epoch, strictly rising within a process, then 12 random.

    Lists are newest first by (created_at, id); created_at has whole seconds, so the id's time part orders the
    jobs made within one second (two ids from one process never tie; across processes the random part breaks it).
    """
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(_last_stamp + 1, time.time_ns() // 1_000_000)
        stamp = _last_stamp
    return f"{_PREFIX[kind]}{stamp:012x}{secrets.token_hex(6)}"


def valid_id(kind: str, value: str | None) -> bool:
    return re.fullmatch(re.escape(_PREFIX[kind]) + "[0-9a-f]{24}", value or "") is not None


def now() -> int:
    return int(time.time())


def _json(value: Any) -> Any:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_OPEN = f"(state = '{TaskState.todo.value}' OR (state = '{TaskState.leased.value}' AND lease_until < ?))"
_WAITING_FINALIZE = (f"(kind <> '{TaskKind.finalize.value}' OR NOT EXISTS (SELECT 1 FROM tasks u WHERE u.job_id = tasks.job_id "
                     f"AND u.kind = '{TaskKind.label.value}' AND u.state IN ('{TaskState.todo.value}', "
                     f"'{TaskState.leased.value}')))")


class _Table:
    def __init__(self, db: Database):
        self.db = db

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        self.db.run(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({_marks(len(row))})", tuple(row.values()))

    def _update(self, table: str, job_id: str, guard: str = "", params: tuple = (), **fields: Any) -> int:
        sets = ", ".join(f"{name} = ?" for name in fields)
        return self.db.run(f"UPDATE {table} SET {sets} WHERE id = ?{guard}", (*fields.values(), job_id, *params))

    def _owned(self, table: str, job_id: str, owner: str | None) -> dict[str, Any] | None:
        if owner is None:
            return self.db.one(f"SELECT * FROM {table} WHERE id = ?", (job_id,))
        return self.db.one(f"SELECT * FROM {table} WHERE id = ? AND owner = ?", (job_id, owner))

class Files(_Table):
    def add(self, file: FileObject) -> FileObject:
        self._insert("files", file.model_dump())
        return file

    def get(self, file_id: str, owner: str | None = None) -> FileObject | None:
        """A file by id; with `owner`, only that owner's (anyone else gets None, as for a missing id)."""
        row = self._owned("files", file_id, owner) if valid_id("file", file_id) else None
        return FileObject.model_validate(row) if row else None

    def owned(self, owner: str, purpose: str | None = None) -> list[FileObject]:
        where, params = ("owner = ?", (owner,)) if purpose is None else ("owner = ? AND purpose = ?", (owner, purpose))
        rows = self.db.all(f"SELECT * FROM files WHERE {where} ORDER BY created_at DESC, id DESC", params)
        return [FileObject.model_validate(r) for r in rows]

    def update(self, file_id: str, size: int, path: str) -> None:
        self._update("files", file_id, bytes=size, path=path)

    def delete(self, file_id: str, owner: str) -> bool:
        return self.db.run("DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)) > 0

    def in_use(self, file_id: str) -> bool:
        """Whether an active batch reads this file, or a queued or running audit (its gold set)."""
        row = self.db.one(f"SELECT COUNT(*) AS n FROM batches WHERE input_file_id = ? AND status IN ({_marks(len(ACTIVE_BATCH))})",
                          (file_id, *ACTIVE_BATCH))
        if row and row["n"]:
            return True
        audits = self.db.all(f"SELECT request FROM audits WHERE status IN ({_marks(len(ACTIVE_AUDIT))})", ACTIVE_AUDIT)
        return any(json.loads(a["request"]).get("gold_file_id") == file_id for a in audits)

class Batches(_Table):
    def add(self, batch: BatchJob) -> None:
        """The batch and its first task (validate its input), together."""
        row = batch.model_dump(mode="json")
        row.update(errors=_json(batch.errors), metadata=_json(batch.metadata), summary=_json(batch.summary))
        with self.db.transaction():
            self._insert("batches", row)
            Tasks(self.db).add([Task(job_id=batch.id, idx=0, kind=TaskKind.validate, owner=batch.owner, state=TaskState.todo,
                                 created_at=batch.created_at)])

    def get(self, batch_id: str, owner: str | None = None) -> BatchJob | None:
        row = self._owned("batches", batch_id, owner) if valid_id("batch", batch_id) else None
        return BatchJob.model_validate(row) if row else None

    def owned(self, owner: str, limit: int = 20, after: str | None = None) -> list[BatchJob]:
        """An owner's batches, newest first; `after` pages on from that id."""
        mark = self.get(after, owner) if after else None
        if mark is not None:
            rows = self.db.all("SELECT * FROM batches WHERE owner = ? AND (created_at < ? OR (created_at = ? AND id < ?)) "
                               "ORDER BY created_at DESC, id DESC LIMIT ?",
                               (owner, mark.created_at, mark.created_at, mark.id, limit))
        else:
            rows = self.db.all("SELECT * FROM batches WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                               (owner, limit))
        return [BatchJob.model_validate(r) for r in rows]

    def update(self, batch_id: str, **fields: Any) -> None:
        for name in ("errors", "summary", "metadata"):
            if name in fields:
                fields[name] = _json(fields[name])
        self._update("batches", batch_id, **fields)

    def set_status(self, batch_id: str, status: BatchStatus, only_from: tuple[BatchStatus, ...] = (),
                         **fields: Any) -> bool:
        """Move a batch to `status`, stamping `<status>_at`; with `only_from`, only from those states."""
        if "errors" in fields:
            fields["errors"] = _json(fields["errors"])
        stamp = {} if status == BatchStatus.validating else {f"{status.value}_at": now()}
        guard = f" AND status IN ({_marks(len(only_from))})" if only_from else ""
        return self._update("batches", batch_id, guard, tuple(s.value for s in only_from),
                            status=status.value, **stamp, **fields) > 0

    def add_progress(self, batch_id: str, completed: int, failed: int) -> None:
        """A finished chunk's lines, added to the batch's request counts (finalizing counts them again exactly)."""
        self.db.run("UPDATE batches SET completed = completed + ?, failed = failed + ? WHERE id = ?",
                    (completed, failed, batch_id))

    def stop(self, batch_id: str, reason: str) -> bool:
        """Stop an active batch ("cancel" or "expire"): its waiting chunks are dropped, the chunk in flight stops at
        its next engine call (its worker sees `stop_reason`), and the finalize task writes what was done."""
        with self.db.transaction():
            changed = self._update("batches", batch_id, " AND stop_reason IS NULL AND status IN (?, ?)",
                                   (BatchStatus.validating.value, BatchStatus.in_progress.value), stop_reason=reason,
                                   **({"status": BatchStatus.cancelling.value, "cancelling_at": now()} if reason == "cancel" else {}))
            if changed:
                self.db.run("UPDATE tasks SET state = ? WHERE job_id = ? AND kind IN (?, ?) AND state = ?",
                            (TaskState.cancelled.value, batch_id, TaskKind.label.value, TaskKind.validate.value,
                             TaskState.todo.value))
                self._finalize_now(batch_id)
        return changed > 0

    def _finalize_now(self, batch_id: str) -> None:
        """A stopped batch whose validation never ran gets its finalize task (validation adds it otherwise)."""
        row = self.db.one("SELECT COUNT(*) AS n FROM tasks WHERE job_id = ? AND kind = ?", (batch_id, TaskKind.finalize.value))
        if row and not row["n"]:
            owner = self.db.one("SELECT owner FROM batches WHERE id = ?", (batch_id,))
            Tasks(self.db).add([Task(job_id=batch_id, idx=FINALIZE_IDX, kind=TaskKind.finalize, owner=owner["owner"] if owner else "",
                                 state=TaskState.todo, created_at=now())])

    def expired(self) -> list[str]:
        rows = self.db.all("SELECT id FROM batches WHERE expires_at < ? AND stop_reason IS NULL AND status IN (?, ?)",
                           (now(), BatchStatus.validating.value, BatchStatus.in_progress.value))
        return [r["id"] for r in rows]

class Audits(_Table):
    def add(self, audit: AuditJob) -> None:
        row = audit.model_dump(mode="json")
        row.update(request=_json(audit.request), result=_json(audit.result))
        with self.db.transaction():
            self._insert("audits", row)
            Tasks(self.db).add([Task(job_id=audit.id, idx=0, kind=TaskKind.audit, owner=audit.owner, state=TaskState.todo,
                                 created_at=audit.created_at)])

    def get(self, audit_id: str | None, owner: str | None = None) -> AuditJob | None:
        row = self._owned("audits", audit_id, owner) if audit_id and valid_id("audit", audit_id) else None
        return AuditJob.model_validate(row) if row else None

    def set_status(self, audit_id: str, status: AuditStatus, error: str | None = None,
                         result: dict[str, Any] | None = None) -> None:
        done = status in (AuditStatus.completed, AuditStatus.failed)
        self._update("audits", audit_id, status=status.value, error=error, result=_json(result),
                     finished_at=now() if done else None)


class Campaigns(_Table):
    def add(self, campaign: Campaign, links: dict[str, str]) -> None:
        """The campaign and its labeling links (token hash -> the one annotator that link labels as)."""
        with self.db.transaction():
            self._insert("campaigns", campaign.model_dump())
            for token_hash, annotator in links.items():
                self.add_link(campaign.id, token_hash, annotator)

    def add_link(self, campaign_id: str, token_hash: str, annotator: str) -> None:
        self._insert("campaign_links", {"token_hash": token_hash, "campaign_id": campaign_id, "annotator": annotator})

    def annotators(self, campaign_id: str) -> list[str]:
        rows = self.db.all("SELECT annotator FROM campaign_links WHERE campaign_id = ? ORDER BY annotator", (campaign_id,))
        return [r["annotator"] for r in rows]

    def get(self, campaign_id: str, owner: str | None = None) -> Campaign | None:
        row = self._owned("campaigns", campaign_id, owner) if valid_id("campaign", campaign_id) else None
        return Campaign.model_validate(row) if row else None

    def by_token_hash(self, token_hash: str) -> tuple[Campaign, str] | None:
        """The campaign a labeling link belongs to, and the annotator it labels as."""
        link = self.db.one("SELECT campaign_id, annotator FROM campaign_links WHERE token_hash = ?", (token_hash,))
        campaign = self.get(link["campaign_id"]) if link else None
        return (campaign, link["annotator"]) if campaign and link else None

    def set_audit(self, campaign_id: str, audit_id: str) -> None:
        self._update("campaigns", campaign_id, audit_id=audit_id)

    def save_label(self, campaign_id: str, item_id: str, annotator: str, label: str) -> None:
        self.db.run("INSERT INTO human_labels (campaign_id, item_id, annotator, label, created_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (campaign_id, item_id, annotator) DO UPDATE SET label = excluded.label, "
                    "created_at = excluded.created_at", (campaign_id, item_id, annotator, label, now()))

    def labels(self, campaign_id: str) -> list[HumanLabel]:
        rows = self.db.all("SELECT item_id, annotator, label, created_at FROM human_labels WHERE campaign_id = ? "
                           "ORDER BY created_at, item_id", (campaign_id,))
        return [HumanLabel.model_validate(r) for r in rows]

class Tasks(_Table):
    def add(self, tasks: list[Task]) -> None:
        """Insert tasks; one that exists already (a validation redone after its worker died) is left as it is."""
        for task in tasks:
            row = task.model_dump(mode="json", exclude={"worker", "token", "lease_until"})
            self.db.run(f"INSERT INTO tasks ({', '.join(row)}) VALUES ({_marks(len(row))}) "
                        "ON CONFLICT (job_id, idx) DO NOTHING", tuple(row.values()))

    def of(self, job_id: str) -> list[Task]:
        return [Task.model_validate(r) for r in self.db.all("SELECT * FROM tasks WHERE job_id = ? ORDER BY idx", (job_id,))]

    def lease(self, worker: str, lease_s: float, kinds: tuple[TaskKind, ...] = tuple(TaskKind)) -> Task | None:
        """The next task for `worker`, leased for `lease_s` seconds: the oldest open task of the key served longest
        ago (round-robin across keys); None when nothing is open."""
        clock = time.time()
        kind_list = tuple(k.value for k in kinds)
        owners = self.db.all(
            f"SELECT DISTINCT tasks.owner, COALESCE(s.served_at, 0) AS served FROM tasks LEFT JOIN owners_served s "
            f"ON s.owner = tasks.owner WHERE {_OPEN} AND kind IN ({_marks(len(kind_list))}) ORDER BY served",
            (clock, *kind_list))
        for entry in owners:
            candidates = self.db.all(
                f"SELECT job_id, idx FROM tasks WHERE owner = ? AND {_OPEN} AND kind IN ({_marks(len(kind_list))}) "
                f"AND {_WAITING_FINALIZE} ORDER BY created_at, job_id, idx LIMIT 4", (entry["owner"], clock, *kind_list))
            for candidate in candidates:
                token = secrets.token_hex(8)
                taken = self.db.run(
                    f"UPDATE tasks SET state = ?, worker = ?, token = ?, lease_until = ?, attempts = attempts + 1 "
                    f"WHERE job_id = ? AND idx = ? AND {_OPEN}",
                    (TaskState.leased.value, worker, token, time.time() + lease_s, candidate["job_id"], candidate["idx"],
                     time.time()))
                if taken:
                    self.db.run("INSERT INTO owners_served (owner, served_at) VALUES (?, ?) ON CONFLICT (owner) "
                                "DO UPDATE SET served_at = excluded.served_at", (entry["owner"], time.time()))
                    row = self.db.one("SELECT * FROM tasks WHERE job_id = ? AND idx = ?", (candidate["job_id"], candidate["idx"]))
                    return Task.model_validate(row) if row else None
        return None

    def renew(self, task: Task, lease_s: float) -> bool:
        """Extend the lease; False when it is no longer this holder's (it ran out and another worker took it)."""
        return self.db.run("UPDATE tasks SET lease_until = ? WHERE job_id = ? AND idx = ? AND token = ? AND state = ?",
                           (time.time() + lease_s, task.job_id, task.idx, task.token, TaskState.leased.value)) > 0

    def finish(self, task: Task, state: TaskState = TaskState.done) -> bool:
        """Mark a leased task done (or cancelled); False when the lease was lost (the work is another worker's now)."""
        return self.db.run("UPDATE tasks SET state = ?, lease_until = NULL WHERE job_id = ? AND idx = ? AND token = ? "
                           "AND state = ?", (state.value, task.job_id, task.idx, task.token, TaskState.leased.value)) > 0

    def release(self, task: Task) -> None:
        """Give a leased task back at once (its worker is shutting down): another worker may take it now."""
        self.db.run("UPDATE tasks SET state = ?, lease_until = NULL, worker = NULL WHERE job_id = ? AND idx = ? AND token = ? "
                    "AND state = ?", (TaskState.todo.value, task.job_id, task.idx, task.token, TaskState.leased.value))

    def waiting(self) -> dict[str, int]:
        """Tasks waiting or leased, by state (for /metrics and /health)."""
        rows = self.db.all("SELECT state, COUNT(*) AS n FROM tasks WHERE state IN (?, ?) GROUP BY state",
                           (TaskState.todo.value, TaskState.leased.value))
        return {r["state"]: int(r["n"]) for r in rows}


class JobStore:
    """The store's tables over one database (see the module docstring); safe to share between a process's threads."""

    def __init__(self, db: Database):
        self.db = db
        self.files, self.batches, self.audits = Files(db), Batches(db), Audits(db)
        self.campaigns, self.tasks = Campaigns(db), Tasks(db)

    @classmethod
    def open(cls, store: str | Path) -> JobStore:
        """SQLite for a path, PostgreSQL for a postgresql:// URL."""
        return cls(open_database(store))

    def active_jobs(self, owner: str) -> int:
        """Batches and audits of an owner that are queued or running (the per-key job cap counts these)."""
        row = self.db.one(
            f"SELECT (SELECT COUNT(*) FROM batches WHERE owner = ? AND status IN ({_marks(len(ACTIVE_BATCH))}))"
            f" + (SELECT COUNT(*) FROM audits WHERE owner = ? AND status IN ({_marks(len(ACTIVE_AUDIT))})) AS n",
            (owner, *ACTIVE_BATCH, owner, *ACTIVE_AUDIT))
        return int(row["n"]) if row else 0

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> jobs, for /metrics."""
        rows = self.db.all("SELECT 'batch' AS kind, status, COUNT(*) AS n FROM batches GROUP BY status "
                           "UNION ALL SELECT 'audit', status, COUNT(*) FROM audits GROUP BY status")
        return {(r["kind"], r["status"]): int(r["n"]) for r in rows}

    def close(self) -> None:
        self.db.close()
