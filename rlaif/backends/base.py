"""The backend protocol: `complete(requests)`, `stats()` and `close()`.

A backend turns chat requests into completions. It never raises for a single request: a request that
fails (too long for the model, a server error after retries) comes back as a `Completion` with `error`
set, and the judge records that item as unlabeled with the reason. Whole-backend failures (the engine
does not start) raise `BackendError`. Every backend counts what it did (`BackendStats`: requests,
attempts, retries and failures by kind, tokens, cost), so a stage can report it whatever the backend.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rlaif.records import Message

__all__ = ["CompletionRequest", "Choice", "Completion", "BackendStats", "Backend", "BackendBase"]


class CompletionRequest(BaseModel):
    """One chat request."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    messages: list[Message]
    max_tokens: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    top_logprobs: int = Field(0, ge=0, le=20)
    """Top logprobs per generated position (0 = none)."""
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    """Stop strings (not included in the output)."""
    continue_final: bool = False
    """The last message is an assistant prefix to continue (no new assistant turn is opened): used to read the
    verdict probability right after a rationale, with a prefill-only request."""


class Choice(BaseModel):
    """One generated continuation."""

    text: str
    finish_reason: str | None = None
    logprobs: list[dict[str, float]] = Field(default_factory=list)
    """Per generated position: token string -> logprob for the top tokens."""
    tokens: int = 0


class Completion(BaseModel):
    """The result of one request: choices, or an error saying why there are none."""

    choices: list[Choice] = Field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None
    latency_s: float = 0.0
    cost_usd: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)


class BackendStats(BaseModel):
    """What a backend did since it opened. Backends that do not retry have attempts == requests."""

    requests: int = 0
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: dict[str, int] = Field(default_factory=dict)
    """Retried attempts by kind (rate_limit, server_error, timeout, connection, malformed)."""
    failures: dict[str, int] = Field(default_factory=dict)
    """Requests that came back with an error, by kind."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    servers: dict[str, int] = Field(default_factory=dict)
    """Requests answered, by server base URL (backends that reach servers over HTTP; empty for the others)."""
    engine_memory_gib: float | None = None
    """Memory the in-process engines hold, in GiB (KV cache reserved + weights); None for backends with no engine.
    A level, not a count: `since` keeps it and `+` adds the engines up."""

    def since(self, before: BackendStats) -> BackendStats:
        """What was counted after `before` was taken (kinds with no new count are left out)."""
        def grown(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
            return {k: v - then.get(k, 0) for k, v in now.items() if v - then.get(k, 0)}

        return BackendStats(
            requests=self.requests - before.requests, attempts=self.attempts - before.attempts,
            succeeded=self.succeeded - before.succeeded, failed=self.failed - before.failed,
            retries=grown(self.retries, before.retries), failures=grown(self.failures, before.failures),
            prompt_tokens=self.prompt_tokens - before.prompt_tokens,
            completion_tokens=self.completion_tokens - before.completion_tokens,
            cost_usd=self.cost_usd - before.cost_usd, servers=grown(self.servers, before.servers),
            engine_memory_gib=self.engine_memory_gib,
        )

    def __add__(self, other: BackendStats) -> BackendStats:
        return BackendStats(
            requests=self.requests + other.requests, attempts=self.attempts + other.attempts,
            succeeded=self.succeeded + other.succeeded, failed=self.failed + other.failed,
            retries=dict(Counter(self.retries) + Counter(other.retries)),
            failures=dict(Counter(self.failures) + Counter(other.failures)),
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens, cost_usd=self.cost_usd + other.cost_usd,
            servers=dict(Counter(self.servers) + Counter(other.servers)),
            engine_memory_gib=_sum_known(self.engine_memory_gib, other.engine_memory_gib),
        )


def _add_usage(stats: BackendStats, completions: list[Completion]) -> None:
    """Add the tokens and cost of finished requests to the counters (the caller holds the lock)."""
    stats.prompt_tokens += sum(c.prompt_tokens for c in completions)
    stats.completion_tokens += sum(c.completion_tokens for c in completions)
    stats.cost_usd += sum(c.cost_usd for c in completions)


def _sum_known(a: float | None, b: float | None) -> float | None:
    """a + b, None only when both are."""
    return None if a is None and b is None else round((a or 0.0) + (b or 0.0), 3)


@runtime_checkable
class Backend(Protocol):
    """What every backend provides."""

    name: str
    model: str

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        """One completion per request, in order."""
        ...

    def stats(self) -> BackendStats:
        """A snapshot of the counters since the backend opened."""
        ...

    def close(self) -> None: ...


def error_kind(error: str) -> str:
    """'prompt too long: 3000 tokens + 1 ...' -> 'prompt too long'."""
    return error.split(":")[0].strip() or "error"


class BackendBase:
    """Counters and context-manager plumbing shared by the concrete backends.

    `_counted(completions)` records finished requests; a backend that retries also calls `_count_retry`."""

    name = "base"
    model = ""

    def __init__(self) -> None:
        self._stats = BackendStats()
        self._stats_lock = threading.Lock()

    def stats(self) -> BackendStats:
        with self._stats_lock:
            return self._stats.model_copy(deep=True)

    def _counted(self, completions: list[Completion]) -> list[Completion]:
        """Count finished requests of a backend that does not retry; returns them unchanged. Successes are
        summed first and counted in one update (a batch may hold thousands); failures one by one, by kind."""
        ok = [c for c in completions if not c.error]
        with self._stats_lock:
            s = self._stats
            s.requests += len(ok)
            s.attempts += len(ok)
            s.succeeded += len(ok)
            _add_usage(s, ok)
        for completion in completions:
            if completion.error:
                self._count_request(completion)
        return completions

    def _count_request(self, completion: Completion, attempts: int = 1, failure: str | None = None,
                       server: str | None = None) -> None:
        """Count one finished request: its attempts, its failure kind (from the error text unless given), and the
        server that answered it."""
        with self._stats_lock:
            s = self._stats
            s.requests += 1
            s.attempts += attempts
            if completion.error:
                kind = failure or error_kind(completion.error)
                s.failed += 1
                s.failures[kind] = s.failures.get(kind, 0) + 1
            else:
                s.succeeded += 1
                if server is not None:
                    s.servers[server] = s.servers.get(server, 0) + 1
            _add_usage(s, [completion])

    def _count_retry(self, kind: str) -> None:
        with self._stats_lock:
            self._stats.retries[kind] = self._stats.retries.get(kind, 0) + 1

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
