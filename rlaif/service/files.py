"""Uploaded and produced files: metadata in the job store, bytes under the service directory, which every worker
of a service must see at the same path (a local disk for workers on one host, a shared filesystem across hosts).

Uploads go to `<service dir>/files/<id>.jsonl`, outputs stay in their job's run folder. A file is found by its id
only, never by a name the client gives. Files are created 0600 and folders 0700: the service's data is its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from rlaif.service.records import FileObject
from rlaif.service.store import JobStore, new_id, now

__all__ = ["FileStore", "TooLarge", "private_folder"]


class TooLarge(Exception):
    """An upload went over the size cap (the partial file is removed)."""

    def __init__(self, limit: int):
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


def private_folder(path: Path) -> Path:
    """A folder only the service's user can enter (made if missing)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


class FileStore:
    def __init__(self, store: JobStore, root: Path):
        self.store, self.root = store, root
        private_folder(root)
        private_folder(root / "files")

    def upload_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{file_id}.jsonl"

    def get(self, file_id: str, owner: str) -> FileObject | None:
        """The owner's file, or None (also for an id of the wrong shape or someone else's file)."""
        return self.store.files.get(file_id, owner)

    def path(self, file_id: str) -> Path:
        found = self.store.files.get(file_id)
        if found is None:
            raise FileNotFoundError(f"file {file_id} not found")
        return self.root / found.path

    def upload(self, owner: str, purpose: str, filename: str, chunks: Iterable[bytes], limit: int) -> FileObject:
        """Stream an upload to disk (never held in memory whole); TooLarge past `limit` bytes."""
        file_id = new_id("file")
        target = self.upload_path(file_id)
        size = 0
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(limit)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return self.store.files.add(FileObject(id=file_id, owner=owner, purpose=purpose, filename=filename[:200], bytes=size,
                                               created_at=now(), path=str(target.relative_to(self.root))))

    def register(self, owner: str, purpose: str, filename: str, path: Path, file_id: str | None = None) -> str:
        """A job's output file (a path under the service directory); an existing id is updated in place."""
        relative = str(path.resolve().relative_to(self.root.resolve()))
        if file_id and self.store.files.get(file_id):
            self.store.files.update(file_id, path.stat().st_size, relative)
            return file_id
        made = FileObject(id=new_id("file"), owner=owner, purpose=purpose, filename=filename, bytes=path.stat().st_size,
                          created_at=now(), path=relative)
        return self.store.files.add(made).id

    def delete(self, file: FileObject) -> None:
        """Forget a file and remove its bytes (an upload; a job's output file stays in its run folder)."""
        self.store.files.delete(file.id, file.owner)
        if file.path.startswith("files/"):
            (self.root / file.path).unlink(missing_ok=True)
