"""Verdict reading: completions -> one `OrderVerdict` per reading. Pure: no backend, no I/O.

Without reasoning the verdict is read from the first-position logprobs (soft), from the short reply (hard), or
`auto` (logprobs where present, else the text). In reasoning mode the label written after the LAST marker is
read from the rationale, and the soft probability from the prefill request that continues it; if that gives
nothing readable, the written verdict is used. Whatever cannot be read is an error with its reason.
"""

from __future__ import annotations

from typing import Any

from rlaif.backends.base import Completion
from rlaif.config.judge import JudgeConfig
from rlaif.judging.planning import Reading
from rlaif.judging.verdicts import calibrate, parse_marked, parse_reply, read_verdict
from rlaif.records import OrderVerdict

__all__ = ["order_verdict", "recorded", "soft_fields", "hard_fields", "read_reply", "rationale_of", "read_rationale", "read_prefill"]


def order_verdict(reading: Reading, **fields: Any) -> OrderVerdict:
    """An order verdict with the prompt kept for audit and every request's tokens counted."""
    return OrderVerdict(order=reading.order, sample=reading.sample, messages=reading.messages,
                        prompt_tokens=sum(c.prompt_tokens for c in reading.completions),
                        completion_tokens=sum(c.completion_tokens for c in reading.completions), **fields)


def recorded(top: dict[str, float]) -> dict[str, float]:
    """Top logprobs as a reading keeps them: rounded to 5 decimals (the probability is read at full precision)."""
    return {token: round(logprob, 5) for token, logprob in top.items()}


def soft_fields(config: JudgeConfig, order: str, top: dict[str, float]) -> tuple[dict[str, Any], str | None]:
    """Fields of a logprob reading at the verdict position, or the reason it cannot be read."""
    cfg = config.verdict
    reading = read_verdict(top, cfg.labels)
    if reading.reason:
        return {}, reading.reason
    if reading.mass < cfg.min_verdict_mass:
        return {"verdict_mass": reading.mass}, (f"verdict tokens carry {reading.mass:.3f} of the probability, "
                                                f"below min_verdict_mass {cfg.min_verdict_mass}")
    p_a = calibrate(reading.p_a, cfg.temperature)
    return dict(p_first=p_a if order == "12" else 1.0 - p_a, verdict_mass=reading.mass, parsed_from="logprobs"), None


def hard_fields(order: str, label: str) -> dict[str, Any]:
    """A written label as a hard probability that response_1 is better."""
    return dict(p_first=1.0 if (label == "A") == (order == "12") else 0.0, parsed_from="text", text_verdict=label)


def read_reply(config: JudgeConfig, reading: Reading, completion: Completion) -> OrderVerdict:
    """Without reasoning: the verdict from the first-position logprobs or the short reply, per the parser."""
    if completion.error:
        return order_verdict(reading, error=completion.error)
    choice = completion.choices[0] if completion.choices else None
    if choice is None:
        return order_verdict(reading, error="backend returned no output: no logprobs for the verdict token and no text")
    parser, top = config.verdict.parser, choice.logprobs[0] if choice.logprobs else {}
    common = dict(top_logprobs=recorded(top), raw_output=choice.text)
    if parser == "first_token_logprobs" and not top:
        return order_verdict(reading, error="backend returned no logprobs for the verdict token", raw_output=choice.text)
    note = None
    if parser != "text" and top:
        fields, reason = soft_fields(config, reading.order, top)
        if not reason or parser == "first_token_logprobs":
            return order_verdict(reading, **common, **fields, error=reason)
        note = f"logprobs unreadable ({reason}); read the text"
    text = parse_reply(choice.text, config.verdict.labels, config.reasoning.marker)
    if text.label is None:
        return order_verdict(reading, **common, note=note, error=text.reason)
    return order_verdict(reading, **common, **hard_fields(reading.order, text.label), note=note)


def rationale_of(reading: Reading) -> tuple[str | None, str | None]:
    """(rationale, error) of a reasoning-mode reading's first completion."""
    completion = reading.completions[0]
    choice = completion.choices[0] if completion.choices else None
    if completion.error or choice is None:
        return None, completion.error or "backend returned no rationale"
    return choice.text, None


def read_rationale(config: JudgeConfig, reading: Reading, rationale: str, note: str | None,
                   **extra: Any) -> OrderVerdict:
    """The written verdict after the rationale's last marker (a hard probability), or why there is none."""
    text = parse_marked(rationale, config.reasoning.marker, config.verdict.labels)
    if text.label is None:
        reason = f"{note}; {text.reason}" if note else text.reason
        return order_verdict(reading, rationale=rationale, error=reason, **extra)
    return order_verdict(reading, rationale=rationale, note=note, **hard_fields(reading.order, text.label), **extra)


def read_prefill(config: JudgeConfig, reading: Reading, rationale: str, completion: Completion) -> OrderVerdict:
    """The soft verdict after the rationale; if the prefill gives no readable logprobs, the written verdict."""
    choice = completion.choices[0] if completion.choices else None
    top = choice.logprobs[0] if choice and choice.logprobs else {}
    if completion.error or not top or choice is None:
        why = completion.error or "no logprobs at the verdict position"
        return read_rationale(config, reading, rationale, note=f"prefill request: {why}; used the written verdict")
    fields, reason = soft_fields(config, reading.order, top)
    extra = dict(top_logprobs=recorded(top), raw_output=choice.text)
    if reason:
        return read_rationale(config, reading, rationale, note=f"prefill request: {reason}; used the written verdict",
                              **extra)
    written = parse_marked(rationale, config.reasoning.marker, config.verdict.labels).label
    return order_verdict(reading, rationale=rationale, text_verdict=written, **fields, **extra)
