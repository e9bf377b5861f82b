"""Backends: one small protocol (`complete`, `stats`, `close`), implemented by each engine, and the pools
judges get them from. Imports only the shared modules and `rlaif.config`."""

from __future__ import annotations

from rlaif.backends.base import Backend, BackendBase, BackendStats, Choice, Completion, CompletionRequest
from rlaif.backends.fake import FakeBackend
from rlaif.backends.pool import BackendPool, Backends, SharedBackend, open_backend

__all__ = [
    "Backend", "BackendBase", "BackendStats", "Choice", "Completion", "CompletionRequest", "FakeBackend",
    "open_backend", "Backends", "BackendPool", "SharedBackend",
]
