"""Opening backends from their configs, and pools that hand them out.

A judge (or an ensemble's members, or a run's policy and judge) asks a pool for the backend of its config;
`BackendPool` opens each distinct config once and closes them all at the end, `SharedBackend` hands out
one backend that is already open (tests, or a caller that owns its engine).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Protocol

from rlaif.backends.base import Backend, BackendStats
from rlaif.config.backend import BackendConfig
from rlaif.errors import ConfigError

__all__ = ["open_backend", "Backends", "BackendPool", "SharedBackend", "BACKEND_KINDS"]

BACKEND_KINDS = ("vllm", "openai", "fake")
"""The backend kinds `open_backend` opens (a config's `kind`)."""


def open_backend(config: BackendConfig) -> Backend:
    """Open the backend a config names (heavy engines are imported only here); any other config is a ConfigError
    naming the kinds there are."""
    if config.kind == "vllm":
        from rlaif.backends.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    if config.kind == "openai":
        from rlaif.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(config)
    if config.kind == "fake":
        from rlaif.backends.fake import InstantBackend

        return InstantBackend(config)
    raise ConfigError(f"unknown backend kind {config.kind!r}: the backend kinds are {', '.join(BACKEND_KINDS)}")


class Backends(Protocol):
    """Where judges get their backends from."""

    def get(self, config: BackendConfig) -> Backend: ...

    def stats(self) -> BackendStats:
        """The counters of every backend handed out, summed."""
        ...


class BackendPool(ExitStack):
    """Opens each distinct backend config once, so a policy and a judge on the same engine share it."""

    def __init__(self) -> None:
        super().__init__()
        self._open: dict[str, Backend] = {}

    def get(self, config: BackendConfig) -> Backend:
        key = config.model_dump_json()
        if key not in self._open:
            self._open[key] = self.enter_context(open_backend(config))  # type: ignore[arg-type]
        return self._open[key]

    def stats(self) -> BackendStats:
        return sum((b.stats() for b in self._open.values()), BackendStats())

    def close(self) -> None:
        super().close()
        self._open.clear()


class SharedBackend:
    """One open backend for every config (the caller opened it and closes it)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def get(self, config: BackendConfig) -> Backend:
        return self.backend

    def stats(self) -> BackendStats:
        return self.backend.stats()
