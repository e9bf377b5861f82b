"""What the service is started with, and who may call it.

API keys are bearer tokens, read from an environment variable (`RLAIF_API_KEYS`) or a keys file named at
start, each line `name: key` (or a bare key, named after its hash). A key is never logged; requests are told
apart by the key's name. Keys are compared in constant time. With no key at all the service is open, which
it allows only on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlaif.errors import ConfigError

__all__ = ["ServiceSettings", "KeyRing", "load_keys", "is_loopback", "KEYS_ENV", "LOCAL_OWNER"]

KEYS_ENV = "RLAIF_API_KEYS"
LOCAL_OWNER = "local"
"""The owner of everything on a service started without keys (loopback only)."""


class ServiceSettings(BaseModel):
    """Everything `rlaif serve` is started with (its options map one to one)."""

    model_config = ConfigDict(extra="forbid")
    judges: list[str] = Field(default_factory=lambda: ["smollm2-pairwise", "smollm2-pointwise"], min_length=1)
    """The judge catalogue: names or YAML paths; one engine per distinct backend config."""
    service_dir: Path = Path("runs/service")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    """Largest body of a synchronous request (judge, reward); 413 above."""
    max_file_bytes: int = Field(1 << 30, ge=1024)
    """Largest upload to /v1/files; 413 above."""
    max_items: int = Field(64, ge=1)
    """Most pairs, items or completions in one synchronous request (and in one batch line); 413 above."""
    max_jobs_per_key: int = Field(4, ge=1)
    """Batches and audits one key may have queued or running at once; 429 with Retry-After above."""
    batch_size: int = Field(64, ge=1)
    """Pairs per bulk chunk (one label-stage chunk, written to the run folder before the next)."""
    max_engine_requests: int = Field(256, ge=1)
    """Most engine requests in one micro-batch (synchronous requests waiting together, or a slice of bulk work)."""
    bulk_slice: int = Field(32, ge=1)
    """Bulk work is fed to the engine this many requests at a time, so synchronous requests wait at most one slice."""
    store: str | None = None
    """The job store every worker shares: None for `<service_dir>/service.sqlite` (SQLite, workers on one host), or a
    postgresql:// URL (workers on several hosts, all seeing `service_dir` at the same path)."""
    executor: Literal["local", "ray", "fleet"] = "local"
    """How bulk chunks are judged (rlaif.service.executors)."""
    workers: int = Field(1, ge=1)
    """Worker processes on this host (`rlaif serve --workers N`), each serving the API and taking chunks."""
    chunk_pairs: int = Field(2048, ge=1)
    """Pairs (or items) per chunk: the unit a worker leases, the unit of fair share between keys, and of resume."""
    lease_s: float = Field(30.0, gt=0)
    """A chunk's lease: renewed while its worker is alive; a dead worker's chunks go to another once it runs out."""
    slots: int | None = Field(None, ge=1)
    """Chunks one worker runs at once (default: local 2, fleet 4, ray 2: one on Ray, one writing its replies)."""
    ray_address: str | None = None
    """`--executor ray`: the cluster to join (`auto`, `ray://host:10001`); default RAY_ADDRESS, else a local Ray."""
    ray_actors: int = Field(1, ge=1)
    """`--executor ray`: judge actors per chunk (each opens the judge's engine)."""
    ray_gpus_per_actor: float = Field(0.0, ge=0)
    reward_scale: Literal["raw", "unit"] = "raw"
    """Pointwise rewards: the judge's rubric score as it is ("raw", e.g. 1-9), or mapped to 0-1 ("unit")."""

    @property
    def store_url(self) -> str:
        return self.store or str(self.service_dir / "service.sqlite")


def _owner_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def load_keys(keys_file: str | Path | None = None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """name -> key, from `RLAIF_API_KEYS` ("name:key,name2:key2" or bare keys) and a keys file (one per line)."""
    source = os.environ if environ is None else environ
    entries: list[str] = [e for e in source.get(KEYS_ENV, "").split(",") if e.strip()]
    if keys_file is not None:
        path = Path(keys_file)
        if not path.is_file():
            raise ConfigError(f"keys file {path} not found: give a file with one `name: key` per line")
        entries += [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    keys: dict[str, str] = {}
    for entry in entries:
        name, sep, key = entry.strip().partition(":")
        name, key = (name.strip(), key.strip()) if sep else (_owner_name(entry.strip()), entry.strip())
        if len(key) < 16:
            raise ConfigError(f"API key {name!r} is shorter than 16 characters; use a long random key "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        if name in keys:
            raise ConfigError(f"API key name {name!r} appears twice; give each key its own name")
        keys[name] = key
    return keys


class KeyRing:
    """Looks up the owner of a bearer key, comparing against every key in constant time."""

    def __init__(self, keys: dict[str, str]):
        self._keys = [(name, key.encode()) for name, key in keys.items()]

    @property
    def open(self) -> bool:
        """No keys: every request is the local owner's (allowed on loopback only)."""
        return not self._keys

    def owner(self, authorization: str | None) -> str | None:
        """The key's name for an `Authorization: Bearer KEY` header, None when it matches no key."""
        if self.open:
            return LOCAL_OWNER
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode()
        found = None
        for name, key in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(given, key):
                found = name
        return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
