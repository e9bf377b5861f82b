"""/v1/files: upload (streamed to disk under the cap), list (by purpose), retrieve, download, delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse

from rlaif.service.files import TooLarge
from rlaif.service.guards import TooLargeBody
from rlaif.service.http import Owner, api_error, service_of
from rlaif.service.records import FileObject

__all__ = ["router", "owned_file"]

router = APIRouter(tags=["files"])

PURPOSES = ("batch", "gold", "user_data")


def owned_file(request: Request, file_id: str, owner: str) -> FileObject:
    found = service_of(request).files.get(file_id, owner)
    if found is None:
        raise api_error(404, f"no file {file_id!r}", "file_not_found")
    return found


def _chunks(upload: UploadFile) -> Iterator[bytes]:
    while chunk := upload.file.read(1 << 20):
        yield chunk


@router.post("/v1/files")
def upload(request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()] = "batch",
           owner: str = Owner) -> dict[str, Any]:
    """Upload a JSONL file: a batch input (purpose=batch) or a gold set for an audit (purpose=gold)."""
    svc = service_of(request)
    if purpose not in PURPOSES:
        raise api_error(400, f"purpose {purpose!r}: use batch (a batch input) or gold (a gold set)", "invalid_purpose")
    try:
        made = svc.files.upload(owner, purpose, Path(file.filename or "upload.jsonl").name, _chunks(file),
                                svc.settings.max_file_bytes)
    except TooLarge as exc:
        raise TooLargeBody(exc.limit) from None
    return made.api()


@router.get("/v1/files")
def list_files(request: Request, purpose: str | None = None, owner: str = Owner) -> dict[str, Any]:
    """This key's files, newest first; `purpose` keeps one kind (batch, gold, batch_output)."""
    found = service_of(request).store.files.owned(owner, purpose)
    return {"object": "list", "data": [f.api() for f in found], "has_more": False}


@router.get("/v1/files/{file_id}")
def get_file(file_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    return owned_file(request, file_id, owner).api()


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Delete a file (409 while a batch that reads it is running)."""
    svc = service_of(request)
    found = owned_file(request, file_id, owner)
    if svc.store.files.in_use(found.id):
        raise api_error(409, f"file {file_id} is read by a batch or audit that is still queued or running; cancel it "
                             "or wait for it to finish", "file_in_use")
    svc.files.delete(found)
    return {"id": found.id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, request: Request, owner: str = Owner) -> FileResponse:
    found = owned_file(request, file_id, owner)
    return FileResponse(service_of(request).files.path(found.id), media_type="application/jsonl")
