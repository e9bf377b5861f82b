"""What callers may rely on of a judge, whatever its kind (a single pairwise judge or an ensemble)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol, TypeVar

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.judging.identity import JudgeIdentity
from rlaif.records import CandidatePair, Judgment, Message

__all__ = ["PairJudge", "Steps", "run_steps"]

T = TypeVar("T")

Steps = Generator[tuple[Backend, list[CompletionRequest]], list[Completion], T]
"""A judge's work as steps: it yields (backend, requests) and is sent back the completions, until it returns its
result. `run_steps` drives it with blocking backend calls; the service drives the same steps without blocking
(awaiting its engine worker), so the judge logic is written once whoever waits for the engine."""


def run_steps(steps: Steps[T]) -> T:
    """Drive a judge's steps with blocking backend calls."""
    try:
        backend, requests = next(steps)
        while True:
            backend, requests = steps.send(backend.complete(requests))
    except StopIteration as done:
        return done.value


class PairJudge(Protocol):
    """Compares two responses: `PairwiseJudge` and `EnsembleJudge` both are one."""

    name: str
    identity: JudgeIdentity
    """Who the judge is, as a record that needs no backend (`rlaif.judging.identity`)."""
    fingerprint: str
    """Identity of everything that shapes a label (config, template and constitution versions): `identity.fingerprint`."""

    def key(self, pair: CandidatePair) -> str:
        """Identity of this judge's label for this pair: reused on rerun, never redone."""
        ...

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """One judgment per pair, in order: labeled, a tie, or unlabeled with the reason."""
        ...

    def steps(self, pairs: list[CandidatePair]) -> Steps[list[Judgment]]:
        """`judge` as steps (see `Steps`): `judge(pairs) == run_steps(steps(pairs))`."""
        ...

    def rendered(self, pair: CandidatePair) -> list[list[Message]]:
        """Every judge prompt this pair would be sent as (each principle, order and member)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Config, template and constitution (names and versions), for the run manifest."""
        ...

