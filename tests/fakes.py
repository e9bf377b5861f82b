"""Fake-judge helpers shared by the logic tests (no model, no engine).

A handler receives the rendered `CompletionRequest` and answers with verdict-token logprobs, the way the
real backend does at the first output position.
"""

from __future__ import annotations

import math

from rlaif.backends import Choice, Completion, CompletionRequest, FakeBackend
from rlaif.config import JudgeConfig, PrincipleSelection, VerdictConfig
from rlaif.records import CandidatePair

MARKER = "EXCELLENT"


def verdict(p_a: float, prompt_tokens: int = 100) -> Completion:
    """A completion whose first position puts p_a on "A" and 1 - p_a on "B"."""
    top = {"A": math.log(p_a), "B": math.log(1.0 - p_a)}
    return Completion(choices=[Choice(text="A" if p_a >= 0.5 else "B", logprobs=[top], tokens=1)],
                      prompt_tokens=prompt_tokens, cost_usd=0.001, latency_s=0.01)


def shown(request: CompletionRequest) -> tuple[str, str]:
    """The (Response A, Response B) texts as rendered in the judge prompt."""
    user = request.messages[-1].content
    a = user.split("[BEGIN RESPONSE A]\n", 1)[1].split("\n[END RESPONSE A]", 1)[0]
    b = user.split("[BEGIN RESPONSE B]\n", 1)[1].split("\n[END RESPONSE B]", 1)[0]
    return a, b


def system_text(request: CompletionRequest) -> str:
    return request.messages[0].content


def prefers_marker(strong: float = 0.9):
    """A judge that prefers whichever shown response contains MARKER, whatever its position."""

    def handler(request: CompletionRequest) -> Completion:
        a, b = shown(request)
        if (MARKER in a) == (MARKER in b):
            return verdict(0.5)
        return verdict(strong if MARKER in a else 1.0 - strong)

    return handler


def always_a(p_a: float = 0.8):
    """Pure position bias: says A with the same confidence whatever is shown."""
    return lambda request: verdict(p_a)


def judge_config(mode: str = "fixed", ids=("helpfulness",), k: int = 1, **verdict) -> JudgeConfig:
    return JudgeConfig(
        name="test-judge",
        principles=PrincipleSelection(mode=mode, ids=list(ids) if mode == "fixed" else [], k=k),
        verdict=VerdictConfig(**verdict),
    )


def fake(handler) -> FakeBackend:
    return FakeBackend(handler, model="fake-judge")


def pair(i: int, marker_first: bool = True, prompt: str | None = None) -> CandidatePair:
    good, bad = f"Answer {i}: {MARKER} and complete.", f"Answer {i}: vague."
    r1, r2 = (good, bad) if marker_first else (bad, good)
    return CandidatePair(id=f"pair-{i}", prompt=prompt or f"Question number {i}?", response_1=r1, response_2=r2)
