"""Request planning for the pairwise judge: which readings a batch of pairs needs, and the requests they send.

One `Reading` per (pair, principle, presentation order, self-consistency sample). Its first request asks for
the verdict itself (one token with logprobs, or a short reply), or in reasoning mode for a rationale; in
reasoning mode a second, prefill-only request ends right after the rationale's last marker and reads the
verdict probability. No backend here: requests are plain records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rlaif.backends.base import Completion, CompletionRequest
from rlaif.config.judge import JudgeConfig
from rlaif.judging.prompting import Principle, neutralize
from rlaif.judging.verdicts import prefix_through_last_marker
from rlaif.records import CandidatePair, Message, OrderVerdict, content_key

__all__ = ["Reading", "plan_readings", "first_request", "prefill_request", "TEXT_REPLY_TOKENS"]

TEXT_REPLY_TOKENS = 8
"""Tokens asked for when the verdict is parsed from a short reply (`text`/`auto` parsers without reasoning)."""


@dataclass
class Reading:
    """One (pair, principle, order, sample) reading: the prompt it sends and the completions it took."""

    index: int
    """Position of the pair in the batch (ids may repeat; positions do not)."""
    principle: Principle
    order: str
    sample: int
    messages: list[Message]
    seed: int | None
    completions: list[Completion] = field(default_factory=list)
    verdict: OrderVerdict | None = None


def plan_readings(
    config: JudgeConfig, pairs: list[CandidatePair], orders: tuple[str, ...],
    principles_for: Callable[[CandidatePair], list[Principle]],
    messages: Callable[[CandidatePair, Principle, str], list[Message]],
) -> list[Reading]:
    """Every reading the batch needs; sampled rationales get a seed tied to the pair, principle, order and sample."""
    sampled = config.reasoning.enabled and config.reasoning.temperature > 0
    # principles.seed also varies the sampled rationales (a retest redraws both); 0 keeps the original seeds
    redraw = [config.principles.seed] if config.principles.seed else []
    readings = []
    for index, pair in enumerate(pairs):
        for principle in principles_for(pair):
            rendered = {order: messages(pair, principle, order) for order in orders}
            for sample in range(config.self_consistency.samples):
                for order in orders:
                    seed = int(content_key(pair.key, principle.id, order, sample, *redraw), 16) % 2**31 if sampled else None
                    readings.append(Reading(index, principle, order, sample, rendered[order], seed))
    return readings


def first_request(config: JudgeConfig, messages: list[Message], seed: int | None = None) -> CompletionRequest:
    """The verdict itself, or the rationale in reasoning mode."""
    verdict = config.verdict
    if config.reasoning.enabled:
        return CompletionRequest(messages=messages, max_tokens=config.reasoning.max_tokens,
                                 temperature=config.reasoning.temperature, seed=seed)
    if verdict.parser == "first_token_logprobs":
        return CompletionRequest(messages=messages, max_tokens=1, temperature=0.0, top_logprobs=verdict.top_logprobs)
    return CompletionRequest(messages=messages, max_tokens=TEXT_REPLY_TOKENS, temperature=0.0,
                             top_logprobs=verdict.top_logprobs if verdict.parser == "auto" else 0)


def prefill_request(config: JudgeConfig, messages: list[Message], rationale: str) -> CompletionRequest:
    """Prefill-only: the judge prompt, then the rationale through its last marker; the next token is the verdict.

    The rationale may quote the texts under judgment, so it is defused like them (`neutralize`): it cannot
    smuggle chat control tokens into the prompt."""
    prefix = neutralize(prefix_through_last_marker(rationale, config.reasoning.marker))
    return CompletionRequest(messages=[*messages, Message(role="assistant", content=prefix)], max_tokens=1,
                             temperature=0.0, top_logprobs=config.verdict.top_logprobs, continue_final=True)
