"""Starting `rlaif serve` as a real process on 127.0.0.1 for the service tests (and stopping or killing it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef00"}

FAKE_JUDGE = """\
name: fake-pairwise
description: instant fake backend (answers judge nothing; for measuring our own code and plumbing)
mode: pairwise
backend: {kind: fake}
template: judge/pairwise.jinja
constitution: constitution/default.yaml
verdict:
  parser: first_token_logprobs
  labels: {A: ["A"], B: ["B"]}
  top_logprobs: 20
both_orders: true
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_judge(folder: Path) -> Path:
    path = folder / "fake-pairwise.yaml"
    path.write_text(FAKE_JUDGE)
    return path


class Server:
    """`rlaif serve` in its own process group; `.url` is http://127.0.0.1:PORT."""

    def __init__(self, service_dir: Path, judges: list[str], keys: dict[str, str] | None = None,
                 extra: list[str] | None = None, port: int | None = None, access_log: bool = True):
        self.service_dir, self.judges, self.keys, self.extra = service_dir, judges, keys, extra or []
        self.access_log = access_log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = service_dir.parent / f"{service_dir.name}-server.log"
        self.proc: subprocess.Popen | None = None
        self.start_s = 0.0

    def start(self, timeout: float = 300) -> Server:
        env = {k: v for k, v in os.environ.items() if k != "RLAIF_API_KEYS"}
        if self.keys:
            env["RLAIF_API_KEYS"] = ",".join(f"{n}:{k}" for n, k in self.keys.items())
        command = [sys.executable, "-m", "rlaif.cli", "serve", "--dir", str(self.service_dir), "--port", str(self.port),
                   *(["--access-log"] if self.access_log else []), *[a for j in self.judges for a in ("--judge", j)],
                   *self.extra]
        started = time.monotonic()
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rlaif serve exited with {self.proc.returncode}; log {self.log}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"rlaif serve not ready after {timeout} s; log {self.log}:\n{self.tail()}")
            time.sleep(0.5)
        self.start_s = time.monotonic() - started
        return self

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and any engine process it started)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def headers(self, who: str | None = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who and self.keys else {}

    def request(self, method: str, path: str, body: object = None, who: str | None = "alice", raw: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 300) -> tuple[int, dict | str, dict]:
        """(status, JSON reply or text, reply headers)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {**self.headers(who), **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as reply:
                status, text, got = reply.status, reply.read().decode(errors="replace"), dict(reply.headers)
        except urllib.error.HTTPError as exc:
            status, text, got = exc.code, exc.read().decode(errors="replace"), dict(exc.headers)
        try:
            return status, json.loads(text), got
        except ValueError:
            return status, text, got
