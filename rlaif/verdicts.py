"""Verdict probabilities from verdict-token logprobs, calibration, and the combination of both orders.

Pure functions on numbers: no backend, no I/O.
"""

from __future__ import annotations

import math

__all__ = ["read_verdict", "calibrate", "combine_orders", "VerdictReading"]


class VerdictReading(tuple):
    """(p_a, mass, reason): p_a = P(verdict A | A or B) or None with a reason."""

    __slots__ = ()

    def __new__(cls, p_a: float | None, mass: float, reason: str | None):
        return super().__new__(cls, (p_a, mass, reason))

    p_a = property(lambda self: self[0])
    mass = property(lambda self: self[1])
    reason = property(lambda self: self[2])


def read_verdict(top_logprobs: dict[str, float], labels: dict[str, list[str]]) -> VerdictReading:
    """Read P(A) from the top logprobs at the verdict position.

    Token strings are matched after stripping whitespace, so "A" and " A" both count for A. If only one
    verdict token is among the top-k, the other's probability is bounded above by the k-th probability;
    that bound is used (it pulls the estimate toward 0.5, never away from it). If neither is present the
    verdict is unreadable: no label is invented.
    """
    if not top_logprobs:
        return VerdictReading(None, 0.0, "no logprobs at the verdict position")
    mass = {label: 0.0 for label in labels}
    seen = {label: False for label in labels}
    for token, logprob in top_logprobs.items():
        stripped = token.strip()
        for label, variants in labels.items():
            if stripped in variants:
                mass[label] += math.exp(logprob)
                seen[label] = True
    if not any(seen.values()):
        top = sorted(top_logprobs.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{t!r} {math.exp(lp):.2f}" for t, lp in top)
        return VerdictReading(None, 0.0, f"no verdict token ({'/'.join(labels)}) in the top {len(top_logprobs)} logprobs; top: {shown}")
    floor = math.exp(min(top_logprobs.values()))
    for label in labels:
        if not seen[label]:
            mass[label] = floor
    a, b = mass["A"], mass["B"]
    return VerdictReading(a / (a + b), a + b, None)


def calibrate(p: float, temperature: float) -> float:
    """Scale the log-odds of p by 1/temperature (temperature > 1 softens, < 1 sharpens)."""
    if temperature == 1.0:
        return p
    p = min(max(p, 1e-9), 1 - 1e-9)
    logit = math.log(p / (1 - p)) / temperature
    return 1.0 / (1.0 + math.exp(-logit))


def combine_orders(p_first_12: float, p_first_21: float | None) -> tuple[float, bool | None]:
    """Average P(response_1 better) over both presentation orders; do the two orders agree?

    Each argument is already P(response_1 better), i.e. the 21-order reading has been flipped.
    With a single order, agreement is unknown (None).
    """
    if p_first_21 is None:
        return p_first_12, None
    agree = (p_first_12 - 0.5) * (p_first_21 - 0.5) > 0
    return (p_first_12 + p_first_21) / 2.0, agree
