"""Pointwise judging: each response scored alone, per principle, on a written rubric; pairs derived from scores.

    ScoreItem -> PointwiseJudge -> ScoreRecord   (pairs from scores: rlaif.stages.score)

The judge answers one digit. Where the backend returns first-token logprobs, the score is the expectation
over the score digits' probabilities renormalised to sum to 1 (a digit outside the top logprobs counts as 0);
otherwise the digit in the reply text is used. Which way is recorded per principle. A reply with no readable
score leaves the item unscored with the reason, never a made-up score.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.config.judge import JudgeConfig
from rlaif.errors import ConfigError
from rlaif.judging.base import Steps, run_steps
from rlaif.judging.combining import usage
from rlaif.judging.identity import single_identity
from rlaif.judging.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template
from rlaif.records import JudgeReply, Provenance, Record, Sample, content_key, non_blank

__all__ = [
    "ScoreItem", "PrincipleScore", "ScoreRecord", "ScoreReading", "PointwiseJudge",
    "expected_score", "parse_text_score", "read_score", "weighted_score",
]


class ScoreItem(Record):
    """One response to score: a row {id, prompt, response} or a `Sample` from `rlaif generate`."""

    id: str
    prompt: str
    response: str
    prompt_id: str | None = None
    """Responses with the same prompt_id (and prompt text) are paired; None: grouped by prompt text."""
    source: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_sample(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompt_id" in data and "id" not in data:
            sample = Sample.model_validate(data)
            return {"id": f"{sample.prompt_id}:{sample.index}", "prompt": sample.prompt, "response": sample.response,
                    "prompt_id": sample.prompt_id, "source": {"index": sample.index, "model": sample.model,
                                                              "finish_reason": sample.finish_reason}}
        return data

    _check_texts = field_validator("id", "prompt", "response")(non_blank)

    @property
    def key(self) -> str:
        """Content identity: same prompt and response, same key, whatever the id."""
        return content_key(self.prompt, self.response)


class PrincipleScore(JudgeReply):
    """The judge's score for one response under one principle, with everything it was read from."""

    principle_id: str
    score: float | None = None
    method: Literal["logprobs", "text"] | None = None
    """logprobs: expectation over the score digits' probabilities; text: the digit in the reply."""
    distribution: dict[str, float] = Field(default_factory=dict)
    """Renormalised probability of each score (logprobs method), or 1.0 on the parsed score (text method)."""
    score_mass: float | None = None
    """Total first-token probability on the score digits before renormalising."""


class ScoreRecord(Provenance):
    """One response's scores: scored (overall `score` set) or unscored (`reason` set)."""

    key: str
    """Identity of (prompt, response, judge config, template and constitution versions): the resume key."""
    item_id: str
    item_key: str
    prompt_id: str | None = None
    min_score: int
    max_score: int
    principle_ids: list[str]
    per_principle: list[PrincipleScore]
    weights: dict[str, float]
    """The weight each principle's score had in the overall score."""
    score: float | None = None
    """Weighted mean of the per-principle scores; None when any principle is unscored."""
    reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    @property
    def scored(self) -> bool:
        return self.score is not None and self.reason is None


class ScoreReading(tuple):
    """(score, method, distribution, mass, reason): a score read from one reply, or None with a reason."""

    __slots__ = ()

    def __new__(cls, score, method=None, distribution=None, mass=None, reason=None):
        return super().__new__(cls, (score, method, distribution or {}, mass, reason))

    score = property(lambda self: self[0])
    method = property(lambda self: self[1])
    distribution = property(lambda self: self[2])
    mass = property(lambda self: self[3])
    reason = property(lambda self: self[4])


def expected_score(top_logprobs: dict[str, float], min_score: int, max_score: int) -> ScoreReading:
    """The expectation of the score over the score digits at the first position, renormalised."""
    labels = {str(s): s for s in range(min_score, max_score + 1)}
    mass: dict[str, float] = {}
    for token, logprob in top_logprobs.items():
        digit = token.strip()
        if digit in labels:  # " 7" and "7" are the same score
            mass[digit] = mass.get(digit, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if not total > 0:
        top = sorted(top_logprobs.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{t!r} {math.exp(lp):.2f}" for t, lp in top)
        return ScoreReading(None, reason=f"no score digit {min_score}-{max_score} in the top {len(top_logprobs)} logprobs; top: {shown}")
    distribution = {d: mass.get(d, 0.0) / total for d in labels}
    return ScoreReading(sum(labels[d] * p for d, p in distribution.items()), "logprobs", distribution, total)


def parse_text_score(text: str, min_score: int, max_score: int) -> ScoreReading:
    """The LAST integer in the reply, if it is on the scale (a number quoted earlier does not count)."""
    numbers = re.findall(r"\d+(?:\.\d+)?", text or "")
    if not numbers:
        return ScoreReading(None, reason=f"no score in the reply {(text or '')[:40]!r}")
    if "." in numbers[-1]:
        return ScoreReading(None, reason=f"score {numbers[-1]} is not a whole number on the scale")
    value = int(numbers[-1])
    if not min_score <= value <= max_score:
        return ScoreReading(None, reason=f"score {value} is outside the scale {min_score}-{max_score}")
    return ScoreReading(float(value), "text", {str(value): 1.0}, None)


def read_score(completion: Completion, parser: str, min_score: int, max_score: int) -> ScoreReading:
    """A score from one completion: logprobs where the parser allows and the backend gave them, else text."""
    if completion.error:
        return ScoreReading(None, reason=completion.error)
    choice = completion.choices[0] if completion.choices else None
    if choice is None:
        return ScoreReading(None, reason="backend returned no choice")
    top = choice.logprobs[0] if choice.logprobs else {}
    if parser != "text" and top:
        return expected_score(top, min_score, max_score)
    if parser == "first_token_logprobs":
        return ScoreReading(None, reason="backend returned no logprobs for the score token (set verdict.parser: auto to read the text)")
    return parse_text_score(choice.text, min_score, max_score)


def weighted_score(scores: dict[str, float], weights: dict[str, float]) -> float:
    """Weighted mean of per-principle scores; a principle without a weight weighs 1."""
    total = sum(weights.get(pid, 1.0) for pid in scores)
    return sum(weights.get(pid, 1.0) * s for pid, s in scores.items()) / total


class PointwiseJudge:
    """Scores one response at a time under principles of a constitution (one request per principle)."""

    def __init__(self, config: JudgeConfig, backend: Backend, template: JudgeTemplate | None = None,
                 constitution: Constitution | None = None):
        if config.mode != "pointwise":
            raise ConfigError(f"judge {config.name!r} has mode {config.mode!r}; `rlaif score` needs a pointwise judge")
        self.config, self.backend, self.name = config, backend, config.name
        self.template = template or load_template(config.template)
        self.constitution = constitution or load_constitution(config.constitution)
        self.identity = single_identity(config, self.template, self.constitution)  # unknown weight ids fail here
        self.fingerprint = self.identity.fingerprint

    def key(self, item: ScoreItem) -> str:
        """Identity of this judge's score for this response: reused on rerun, never redone."""
        return self.identity.item_key(item)

    def describe(self) -> dict[str, Any]:
        return self.identity.describe()

    def principles_for(self, item: ScoreItem) -> list[Principle]:
        sel = self.config.principles
        return self.constitution.select(sel.mode, sel.k, sel.ids, sel.seed, item.key)

    def request(self, item: ScoreItem, principle: Principle) -> CompletionRequest:
        pw = self.config.pointwise
        messages = self.template.render(principle=principle.model_dump(), prompt=item.prompt, response=item.response,
                                        min_score=pw.min_score, max_score=pw.max_score)
        return CompletionRequest(messages=messages, max_tokens=1, temperature=0.0, top_logprobs=self.config.verdict.top_logprobs)

    def score(self, items: list[ScoreItem]) -> list[ScoreRecord]:
        """Score a batch with one backend call (so the backend can batch and share the rubric prefix)."""
        return run_steps(self.score_steps(items))

    def score_steps(self, items: list[ScoreItem]) -> Steps[list[ScoreRecord]]:
        """`score` as steps (see rlaif.judging.base.Steps)."""
        plan = [(i, p, self.request(item, p)) for i, item in enumerate(items) for p in self.principles_for(item)]
        completions = yield self.backend, [step[2] for step in plan]
        found: list[list[tuple[PrincipleScore, Completion]]] = [[] for _ in items]
        for (index, principle, request), completion in zip(plan, completions):
            found[index].append((self._principle_score(principle.id, request, completion), completion))
        return [self._record(item, found[i]) for i, item in enumerate(items)]

    def _principle_score(self, principle_id: str, request: CompletionRequest, completion: Completion) -> PrincipleScore:
        pw, verdict = self.config.pointwise, self.config.verdict
        choice = completion.choices[0] if completion.choices else None
        base = dict(principle_id=principle_id, messages=request.messages, prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens, raw_output=choice.text if choice else "",
                    top_logprobs=(choice.logprobs[0] if choice and choice.logprobs else {}))
        reading = read_score(completion, verdict.parser, pw.min_score, pw.max_score)
        if reading.reason:
            return PrincipleScore(**base, error=reading.reason)
        if reading.mass is not None and reading.mass < verdict.min_verdict_mass:
            return PrincipleScore(**base, score_mass=reading.mass, error=f"score digits carry {reading.mass:.3f} of the "
                                  f"probability, below min_verdict_mass {verdict.min_verdict_mass}")
        return PrincipleScore(**base, score=reading.score, method=reading.method, distribution=reading.distribution,
                              score_mass=reading.mass)

    def _record(self, item: ScoreItem, found: list[tuple[PrincipleScore, Completion]]) -> ScoreRecord:
        per_principle = [ps for ps, _ in found]
        completions = [c for _, c in found]
        weights = {ps.principle_id: self.config.pointwise.weights.get(ps.principle_id, 1.0) for ps in per_principle}
        errors = [f"{ps.principle_id}: {ps.error}" for ps in per_principle if ps.error]
        overall = None if errors else weighted_score(
            {ps.principle_id: ps.score for ps in per_principle if ps.score is not None}, weights)
        pw = self.config.pointwise
        return ScoreRecord(
            key=self.key(item), item_id=item.id, item_key=item.key, prompt_id=item.prompt_id, judge=self.config.name,
            model=self.backend.model, backend=self.backend.name, template=self.template.name,
            template_version=self.template.version, constitution_version=self.constitution.version,
            min_score=pw.min_score, max_score=pw.max_score, principle_ids=[ps.principle_id for ps in per_principle],
            per_principle=per_principle, weights=weights, score=overall, reason="; ".join(errors) or None,
            **usage(completions),
        )
