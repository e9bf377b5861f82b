"""A fake backend driven by a function, for testing our own logic (parsing, swapping, resume).

It never stands in for a model: the product's tests of real behaviour use the vLLM engine.
"""

from __future__ import annotations

from collections.abc import Callable

from rlaif.backends.base import BackendBase, Completion, CompletionRequest

__all__ = ["FakeBackend"]


class FakeBackend(BackendBase):
    """Answers each request with `handler(request)`; counts calls so tests can check what was redone."""

    name = "fake"

    def __init__(self, handler: Callable[[CompletionRequest], Completion], model: str = "fake-model"):
        super().__init__()
        self.handler = handler
        self.model = model
        self.requests: list[CompletionRequest] = []

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        self.requests.extend(requests)
        return self._counted([self.handler(r) for r in requests])
