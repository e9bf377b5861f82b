"""A fake backend driven by a function, for testing our own logic (parsing, swapping, resume).

It never stands in for a model: the product's tests of real behaviour use the vLLM engine.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable

from rlaif.backends.base import BackendBase, Choice, Completion, CompletionRequest
from rlaif.config.backend import FakeBackendConfig

__all__ = ["FakeBackend", "InstantBackend"]


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


class InstantBackend(BackendBase):
    """`kind: fake` in a judge YAML: answers every request at once with top logprobs (as many as asked) whose
    split between the first two labels is a hash of the prompt. For measuring our own code and testing plumbing;
    its answers judge nothing."""

    name = "fake"
    _FILLER = [" The", "Response", " A", "**", " B", "Both", "I", "\n", "Based", " Neither", "Verdict", "The", " response",
               "Answer", "After", "Yes", "No", "It", "This", "In"]

    def __init__(self, config: FakeBackendConfig):
        super().__init__()
        self.model, self.seed, self.latency_s = config.model, config.seed, config.latency_s
        self._fillers: dict[int, dict[str, float]] = {}

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._counted([self._answer(r) for r in requests])

    def _answer(self, request: CompletionRequest) -> Completion:
        text = request.messages[-1].content
        digest = zlib.crc32(f"{self.seed}:{text}".encode())
        p_a = 0.02 + 0.96 * (digest % 1000) / 999
        top = {"A": math.log(p_a), "B": math.log1p(-p_a), **self._filler(request.top_logprobs)}
        choice = Choice(text="A" if p_a >= 0.5 else "B", finish_reason="length",
                        logprobs=[top] if request.top_logprobs else [], tokens=1)
        return Completion(choices=[choice] * request.n, prompt_tokens=len(text) // 4)

    def _filler(self, k: int) -> dict[str, float]:
        """Top logprobs below the two labels, as long as real float32 logprobs print."""
        if k not in self._fillers:
            self._fillers[k] = {t: -7.0 - i * 0.7310585786300049 for i, t in enumerate(self._FILLER[: max(0, k - 2)])}
        return self._fillers[k]
