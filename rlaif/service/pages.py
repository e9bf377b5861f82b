"""HTML replies: the labeling page's and the audit report's, both under a strict Content-Security-Policy (nothing but
their own nonce-marked style and script, images only inline), no referrer, no cache."""

from __future__ import annotations

import base64
import re
import secrets
from pathlib import Path

from fastapi.responses import HTMLResponse

__all__ = ["html_reply", "report_page", "csp"]

_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def csp(nonce: str) -> str:
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def html_reply(body: str, status: int = 200, nonce: str | None = None) -> HTMLResponse:
    """An HTML reply; without a nonce the page may run no script or style at all."""
    headers = {**_HEADERS, "Content-Security-Policy": csp(nonce or secrets.token_urlsafe(16))}
    return HTMLResponse(body, status_code=status, headers=headers)


def report_page(folder: Path) -> HTMLResponse:
    """report.html with its plots inlined (one authenticated GET shows the whole report) and its style under the
    page's nonce."""
    page = (folder / "report.html").read_text(encoding="utf-8")

    def inline(match: re.Match) -> str:
        name = match.group(1)
        path = folder / name
        if "/" in name or not path.is_file():
            return match.group(0)
        return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    nonce = secrets.token_urlsafe(16)
    page = re.sub(r'<img src="([^"]+)"', inline, page).replace("<style>", f'<style nonce="{nonce}">')
    return html_reply(page, nonce=nonce)
