"""The backend protocol: one method to implement plus `close()`.

A backend turns chat requests into completions. It never raises for a single request: a request that
fails (too long for the model, a server error after retries) comes back as a `Completion` with `error`
set, and the judge records that item as unlabeled with the reason. Whole-backend failures (the engine
does not start) raise `BackendError`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rlaif.records import Message

__all__ = ["CompletionRequest", "Choice", "Completion", "Backend", "BackendBase"]


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


@runtime_checkable
class Backend(Protocol):
    """What every backend provides."""

    name: str
    model: str

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        """One completion per request, in order."""
        ...

    def close(self) -> None: ...


class BackendBase:
    """Context-manager plumbing shared by the concrete backends."""

    name = "base"
    model = ""

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
