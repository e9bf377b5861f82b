"""Uploaded and produced files: metadata in SQLite, bytes under `<service dir>/files/` (uploads) or in a job's
run folder (outputs). A file is found by its id only, never by a name the client gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlaif.service.db import ServiceDB, new_id, now, valid_id

__all__ = ["FileStore", "file_object"]


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    """A file as OpenAI's API describes it."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": "processed", "expires_at": None,
            "status_details": None}


class FileStore:
    def __init__(self, db: ServiceDB, root: Path):
        self.db, self.root = db, root
        (root / "files").mkdir(parents=True, exist_ok=True)

    def upload_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{file_id}.jsonl"

    def get(self, file_id: str, owner: str) -> dict[str, Any] | None:
        """The owner's file, or None (also for an id of the wrong shape or someone else's file)."""
        if not valid_id("file", file_id):
            return None
        return self.db.get("files", file_id, owner)

    def path(self, file_id: str) -> Path:
        row = self.db.get("files", file_id) if valid_id("file", file_id) else None
        if row is None:
            raise FileNotFoundError(f"file {file_id} not found")
        return self.root / row["path"]

    def add_upload(self, file_id: str, owner: str, purpose: str, filename: str, size: int) -> dict[str, Any]:
        row = {"id": file_id, "owner": owner, "purpose": purpose, "filename": filename[:200], "bytes": size,
               "created_at": now(), "path": str(self.upload_path(file_id).relative_to(self.root))}
        self.db.insert("files", row)
        return row

    def register(self, owner: str, purpose: str, filename: str, path: Path, file_id: str | None = None) -> str:
        """A job's output file (a path under the service directory); an existing id is updated in place."""
        relative = str(path.resolve().relative_to(self.root.resolve()))
        if file_id and self.db.get("files", file_id):
            self.db.update("files", file_id, bytes=path.stat().st_size, path=relative)
            return file_id
        file_id = new_id("file")
        self.db.insert("files", {"id": file_id, "owner": owner, "purpose": purpose, "filename": filename,
                                 "bytes": path.stat().st_size, "created_at": now(), "path": relative})
        return file_id
