"""Backends that open no engine: for a process that builds a judge only for its keys, names and description
(the Ray runner's driver, which writes the outputs of judgments its actors made), never to judge.

`PlaceholderPool.get(config)` hands out a `PlaceholderBackend` named and modelled as the config's backend would
be, so judgments and manifests read the same; its `complete` raises, so a judge that tries to use it fails at
once instead of starting an engine where there is no GPU or model.
"""

from __future__ import annotations

from rlaif.backends.base import BackendBase, BackendStats, Completion, CompletionRequest
from rlaif.config.backend import BackendConfig

__all__ = ["PlaceholderBackend", "PlaceholderPool"]


class PlaceholderBackend(BackendBase):
    """Stands in for the backend of `config` without opening it: `complete` raises."""

    def __init__(self, config: BackendConfig):
        super().__init__()
        self.name, self.model = config.kind, config.model

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        raise RuntimeError(f"the {self.name} backend ({self.model}) is not open in this process: it only writes "
                           f"judgments made elsewhere (a bug if reached)")


class PlaceholderPool:
    """A `Backends` pool of placeholders: one per distinct config, none of them an engine."""

    def __init__(self) -> None:
        self._open: dict[str, PlaceholderBackend] = {}

    def get(self, config: BackendConfig) -> PlaceholderBackend:
        return self._open.setdefault(config.model_dump_json(), PlaceholderBackend(config))

    def stats(self) -> BackendStats:
        return BackendStats()
