"""The service's ASGI middleware: plain classes that add no task or thread to a request.

    BodyLimit    413 for a body over the route's cap, by Content-Length or while it streams in
    LocalOnly    with no API keys (loopback only): a Host header that is not a loopback name is refused, so a web
                 page the user visits cannot reach the service through DNS rebinding
    JsonOnly     a POST with a body must be application/json (multipart/form-data for uploads): a cross-site form
                 or a `text/plain` fetch cannot drive the service
    DocsKey      /docs, /redoc and /openapi.json need a key when the service has keys
    Accounting   one log line per request (route template, status, time, key name) and the request metrics
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlaif.service.settings import KeyRing, ServiceSettings

__all__ = ["BodyLimit", "TooLargeBody", "LocalOnly", "JsonOnly", "DocsKey", "Accounting", "error_body", "LOOPBACK_NAMES"]

access = logging.getLogger("rlaif.service.access")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
_UPLOADS = "/v1/files"
_DOCS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")


def error_body(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "code": code, "param": None}


async def _send_json(send: Send, status: int, detail: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    reply = JSONResponse({"error": detail}, status_code=status, headers=headers)
    await send({"type": "http.response.start", "status": status, "headers": reply.raw_headers})
    await send({"type": "http.response.body", "body": reply.body})


def too_large_detail(limit: int) -> dict[str, Any]:
    return error_body(f"request body larger than {limit} bytes; send less per request (or use /v1/files + /v1/batches "
                      "for bulk work)", "request_too_large")


class TooLargeBody(HTTPException):
    """Raised while a body streams in past its cap; answered 413 in the API's error shape."""

    def __init__(self, limit: int):
        super().__init__(413, detail=too_large_detail(limit))


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: ServiceSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_file_bytes + 65536 if scope["path"] == _UPLOADS else self.settings.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, too_large_detail(limit))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLargeBody(limit)
            return message

        await self.app(scope, limited, send)


def _host_name(host: bytes) -> str:
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text.split("]")[0] + "]"
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _origin_name(origin: bytes) -> str:
    """The host of an Origin header ("" for `null` or anything else that is not a URL)."""
    try:
        host = urlsplit(origin.decode("latin-1").strip()).hostname or ""
    except ValueError:
        return ""
    return f"[{host}]" if ":" in host else host


class LocalOnly:
    def __init__(self, app: ASGIApp, keys: KeyRing):
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys.open:
            headers = dict(scope.get("headers") or [])
            if _host_name(headers.get(b"host", b"")) not in LOOPBACK_NAMES:
                await _send_json(send, 421, error_body(
                    "this service has no API keys and answers only requests addressed to localhost or 127.0.0.1 "
                    "(Host header); start it with keys (RLAIF_API_KEYS) to serve other names", "host_not_allowed"))
                return
            origin = headers.get(b"origin")  # a browser's cross-site form or fetch names the page it came from
            if origin is not None and _origin_name(origin) not in LOOPBACK_NAMES:
                await _send_json(send, 403, error_body(
                    "this service has no API keys and answers no request a web page on another site sends (Origin "
                    "header); start it with keys (RLAIF_API_KEYS) to serve other pages", "origin_not_allowed"))
                return
        await self.app(scope, receive, send)


class JsonOnly:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            length = headers.get(b"content-length")
            has_body = b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))
            wanted = b"multipart/form-data" if scope["path"] == _UPLOADS else b"application/json"
            if has_body and kind != wanted:
                await _send_json(send, 415, error_body(
                    f"send the body as {wanted.decode()} (Content-Type), not {kind.decode() or 'without a type'}",
                    "unsupported_media_type"))
                return
        await self.app(scope, receive, send)


class DocsKey:
    def __init__(self, app: ASGIApp, keys: KeyRing):
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _DOCS and not self.keys.open:
            authorization = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if self.keys.owner(authorization) is None:
                await _send_json(send, 401, error_body("the API documentation needs a key: send `Authorization: "
                                                       "Bearer KEY`", "invalid_api_key"), {"WWW-Authenticate": "Bearer"})
                return
        await self.app(scope, receive, send)


class Accounting:
    """Never logs a text, a token or a key: the route template, status, milliseconds and the key's name."""

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
