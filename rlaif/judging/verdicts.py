"""Verdict probabilities from verdict-token logprobs, verdicts written as text, calibration, the combination of
both orders, and the aggregation of several readings (self-consistency samples, ensemble members).

Pure functions on numbers and strings: no backend, no I/O.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "read_verdict", "calibrate", "combine_orders", "VerdictReading", "TextVerdict", "parse_marked", "parse_reply",
    "prefix_through_last_marker", "vote", "aggregate",
]


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
    label_of = {variant: label for label, variants in labels.items() for variant in variants}
    mass = dict.fromkeys(labels, 0.0)
    seen: set[str] = set()
    for token, logprob in top_logprobs.items():
        label = label_of.get(token.strip())
        if label is not None:
            mass[label] += math.exp(logprob)
            seen.add(label)
    if not seen:
        top = sorted(top_logprobs.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{t!r} {math.exp(lp):.2f}" for t, lp in top)
        return VerdictReading(None, 0.0, f"no verdict token ({'/'.join(labels)}) in the top {len(top_logprobs)} logprobs; top: {shown}")
    floor = math.exp(min(top_logprobs.values()))
    for label in labels:
        if label not in seen:
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


# --- Verdicts written as text -------------------------------------------------------------------------------
# A label is read as the first word after optional markup (`**`, `[`, `(`, quotes) and an optional "Response":
# "A", "**A**", "Response B." and "[B]" are read; "The answer is A" is not (the reply must start with the label).
_WORD_RE = re.compile(r"""[\s*_"'`\[(]*(?:response\s+)?([^\s*_"'`\[\]().,:;!?/]+)""", re.IGNORECASE)
_EITHER_RE = re.compile(r"""[\s*_"'`\])]*(?:or|and|/|vs\.?|,)\s*[*_"'`\[(]*(?:response\s+)?([^\s*_"'`\[\]().,:;!?/]+)""", re.IGNORECASE)


class TextVerdict(tuple):
    """(label, reason): the label ("A" or "B") read from text, or None with the reason."""

    __slots__ = ()

    def __new__(cls, label: str | None, reason: str | None):
        return super().__new__(cls, (label, reason))

    label = property(lambda self: self[0])
    reason = property(lambda self: self[1])


def _label_of(word: str, labels: dict[str, list[str]]) -> str | None:
    return next((label for label, variants in labels.items() if word in variants), None)


def _label_at(text: str, labels: dict[str, list[str]]) -> tuple[str | None, str, bool]:
    """(label, word, ambiguous): the offered label `text` starts with, the word read, and whether it went on to
    name the other label too ("A or B", "A/B"), which makes it no verdict at all."""
    match = _WORD_RE.match(text)
    if not match:
        return None, "", False
    word = match.group(1)
    label = _label_of(word, labels)
    other = _EITHER_RE.match(text, match.end())
    if label and other and _label_of(other.group(1), labels) not in (None, label):
        return None, text[: other.end()].strip(), True
    return label, word, False


def _offered(labels: dict[str, list[str]]) -> str:
    return "/".join(labels)


def parse_marked(text: str, marker: str, labels: dict[str, list[str]]) -> TextVerdict:
    """The label after the LAST marker that is followed by an offered label ("Verdict: A ... Verdict: B" -> B).

    A marker followed by anything else ("Verdict: C", "Verdict: A or B") does not count, so a verdict quoted
    earlier in a rationale is only used when no later marker carries a readable one.
    """
    starts = [m.end() for m in re.finditer(re.escape(marker), text, re.IGNORECASE)]
    if not starts:
        return TextVerdict(None, f"no {marker!r} line in the judge's reply")
    words = []
    for start in reversed(starts):
        label, word, _ = _label_at(text[start:], labels)
        if label:
            return TextVerdict(label, None)
        words.append(word)
    return TextVerdict(None, f"after the last {marker!r} the judge wrote {words[0]!r}, not one of {_offered(labels)}")


def parse_reply(text: str, labels: dict[str, list[str]], marker: str | None = None) -> TextVerdict:
    """A short verdict reply ("A", "**B**", "Response A."); a reply containing the marker is read after it."""
    if marker and re.search(re.escape(marker), text, re.IGNORECASE):
        return parse_marked(text, marker, labels)
    label, word, ambiguous = _label_at(text, labels)
    if label:
        return TextVerdict(label, None)
    shown = text.strip()[:60]
    if ambiguous:
        return TextVerdict(None, f"ambiguous reply {shown!r}: it names more than one of {_offered(labels)}")
    return TextVerdict(None, f"reply {shown!r} does not start with one of {_offered(labels)}" if shown else "empty reply")


def prefix_through_last_marker(text: str, marker: str) -> str:
    """The text up to and including the last marker; text without the marker gets one appended on a new line.

    This is the assistant prefix of the prefill request that reads the verdict probability after a rationale.
    """
    matches = list(re.finditer(re.escape(marker), text, re.IGNORECASE))
    if matches:
        return text[: matches[-1].end()]
    body = text.rstrip()
    return f"{body}\n{marker}" if body else marker


# --- Aggregating several probabilities (self-consistency samples, ensemble members) -------------------------


def vote(p: float) -> float:
    """One sample's vote for response 1: 1, 0, or 0.5 for an exact tie."""
    return 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5


def aggregate(probabilities: list[float], how: str) -> tuple[float, float, float]:
    """(p, std, vote_share) over several P(response 1 better).

    mean: p is the average probability; majority: p is the vote share (the share preferring response 1, an
    exact 0.5 counting half), so an even split is a tie. std is the population standard deviation.
    """
    if not probabilities:
        raise ValueError("nothing to aggregate")
    if how not in ("mean", "majority"):
        raise ValueError(f"unknown aggregate {how!r}")
    n = len(probabilities)
    mean = sum(probabilities) / n
    std = math.sqrt(sum((p - mean) ** 2 for p in probabilities) / n)
    share = sum(vote(p) for p in probabilities) / n
    return (mean if how == "mean" else share), std, share
