"""A small threaded HTTP proxy that forwards to a real server and injects faults on a fixed schedule.

    proxy = FaultProxy("http://127.0.0.1:8000", schedule=["ok", "rate_limit", "ok", "cut"], stall_s=8)
    proxy.start(); ... proxy.url ...; proxy.injected  ->  Counter({"rate_limit": 3, "cut": 2})

Only POSTs count against the schedule (GET /v1/models always passes), and the n-th POST gets
`schedule[n % len(schedule)]`, so the share of each fault is fixed. Faults:

    rate_limit   429 with `Retry-After: <retry_after>` and an OpenAI-style error body
    server_error 500 with an error body
    stall        holds the request for `stall_s` seconds (longer than the client timeout), then hangs up
    cut          closes the socket without any response
    malformed    200, Content-Type application/json, a truncated JSON body
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("rate_limit", "server_error", "stall", "cut", "malformed")
# Not passed along: hop-by-hop headers, and those the proxy's own response writes (date, server)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection",
              "date", "server"}


class FaultProxy:
    def __init__(self, upstream: str, schedule: list[str], stall_s: float = 8.0, retry_after: int = 1):
        unknown = set(schedule) - set(FAULTS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.schedule, self.stall_s, self.retry_after = list(schedule), stall_s, retry_after
        self.injected: Counter = Counter()
        self.forwarded = 0
        self._posts = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_action(self, method: str) -> str:
        """The schedule's next entry for a POST; GETs always pass. Counts what it hands out."""
        with self._lock:
            if method != "POST":
                action = "ok"
            else:
                action = self.schedule[self._posts % len(self.schedule)]
                self._posts += 1
            if action == "ok":
                self.forwarded += 1
            else:
                self.injected[action] += 1
            return action


def _handler(proxy: FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: no pooled socket outlives a fault

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            self._handle(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def _handle(self, body: bytes) -> None:
            action = proxy.next_action(self.command)
            if action == "ok":
                return self._forward(body)
            if action == "rate_limit":
                return self._reply(429, _error_body("rate limited by the fault proxy", "rate_limit_exceeded"),
                                   {"Retry-After": str(proxy.retry_after)})
            if action == "server_error":
                return self._reply(500, _error_body("internal error injected by the fault proxy", "server_error"))
            if action == "stall":
                time.sleep(proxy.stall_s)
            if action == "malformed":
                return self._reply(200, b'{"id": "chatcmpl-fault", "object": "chat.completion", "choices": [{"ind')
            self._hang_up()  # stall (after sleeping) and cut

        def _forward(self, body: bytes) -> None:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=600)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                upstream = conn.getresponse()
                data = upstream.read()
                extra = {k: v for k, v in upstream.getheaders() if k.lower() not in HOP_BY_HOP}
                self._reply(upstream.status, data, extra)
            finally:
                conn.close()

        def _reply(self, status: int, data: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            headers = {"content-type": "application/json", **{k.lower(): v for k, v in (headers or {}).items()}}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _hang_up(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()
