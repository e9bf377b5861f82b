"""Typed records that flow one way through the stages.

    PromptItem -> Sample -> CandidatePair -> Judgment -> a preference row, or an unlabeled entry with its reason

Every record is a small pydantic model; stages take records in and give records out, and only the
CLI and the run folder read or write files (the rows are plain dicts, made by `rlaif.store.rows`).
`Provenance` is the block every judge-made record carries (and every preference row repeats);
`Judgment.outcome` is the one definition of a tie.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Record",
    "non_blank",
    "Message",
    "PromptItem",
    "Sample",
    "CandidatePair",
    "JudgeReply",
    "OrderVerdict",
    "PrincipleVerdict",
    "Provenance",
    "Judgment",
    "content_key",
    "reason_kind",
    "TIE_PREFIX",
]


TIE_PREFIX = "tie: "
"""Reasons that start with this mark a tie (see Judgment.tie)."""


def reason_kind(reason: str | None) -> str:
    """A short category of a reason, for summaries and counts:
    'helpfulness: order 12: prompt too long: 3000 tokens ...' -> 'prompt too long'."""
    text = re.sub(r"^[\w-]+: (order \d+: )?", "", reason or "unknown")
    return text.split(";")[0].split(":")[0].strip()


def content_key(*parts: Any) -> str:
    """A stable short hash of JSON-serialisable parts: the identity used for caching and resume."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Record(BaseModel):
    """Base of every record: frozen, and an unknown field is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def non_blank(value: str) -> str:
    """A field validator: the text must not be empty or only whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


class Message(Record):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


class PromptItem(Record):
    """An instruction prompt to sample policy responses for."""

    id: str
    prompt: str
    category: str | None = None

    _check_prompt = field_validator("prompt")(non_blank)


class Sample(Record):
    """One policy response to a prompt."""

    prompt_id: str
    prompt: str
    index: int
    response: str
    model: str
    finish_reason: str | None = None
    tokens: int = 0


class CandidatePair(Record):
    """Two responses to the same prompt, to be compared by the judge."""

    id: str
    prompt: str
    response_1: str
    response_2: str
    source: dict[str, Any] = Field(default_factory=dict)

    _check_texts = field_validator("id", "prompt", "response_1", "response_2")(non_blank)

    @cached_property
    def key(self) -> str:
        """Content identity: same texts, same key, whatever the id (computed once; the record is frozen)."""
        return content_key(self.prompt, self.response_1, self.response_2)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> CandidatePair:
        """A copy; with `update` its texts may differ, so the copy computes its own key."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("key", None)
        return copy


class JudgeReply(Record):
    """What one judge request sent and got back: the part every reading (pairwise order, pointwise score) keeps."""

    top_logprobs: dict[str, float] = Field(default_factory=dict)
    raw_output: str = ""
    messages: list[Message] = Field(default_factory=list)
    """The full judge prompt as sent, for audit."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class OrderVerdict(JudgeReply):
    """The judge's reading of one presentation order under one principle."""

    order: Literal["12", "21"]
    p_first: float | None = None
    """Probability that response_1 (the pair's first response) is better, read in this order."""
    verdict_mass: float | None = None
    """Total probability the judge put on the verdict tokens; low mass means it wanted to say something else."""
    parsed_from: Literal["logprobs", "text"] | None = None
    """How the verdict was read: verdict-token logprobs (soft) or a label parsed from text (hard 1.0/0.0)."""
    text_verdict: Literal["A", "B"] | None = None
    """The label written in the judge's text (reasoning mode or the text parser), when one was readable."""
    rationale: str | None = None
    """Reasoning mode: the judge's rationale as it wrote it (the verdict is read after its last marker)."""
    note: str | None = None
    """Why the verdict was read the way it was, e.g. the logprob reading that failed before the text was used."""
    sample: int = 0
    """Self-consistency: which of the N samples this is."""


class PrincipleVerdict(Record):
    """Both orders under one principle, combined."""

    principle_id: str
    orders: list[OrderVerdict]
    p_first: float | None = None
    orders_agree: bool | None = None
    error: str | None = None


class Provenance(Record):
    """What produced a label: the judge, its model and backend, the template and constitution (with their
    versions) and the principles it was judged under. Every judge-made record carries these fields, and every
    preference row repeats them as columns (`columns()`)."""

    judge: str
    model: str
    backend: str
    template: str
    template_version: str
    constitution_version: str
    principle_ids: list[str]

    def provenance(self) -> Provenance:
        """Just the provenance fields of a record that carries them."""
        return Provenance(**{name: getattr(self, name) for name in Provenance.model_fields})

    def columns(self) -> dict[str, Any]:
        """The provenance columns of a preference row."""
        return {"judge": self.judge, "judge_model": self.model, "judge_backend": self.backend, "template": self.template,
                "template_version": self.template_version, "constitution_version": self.constitution_version,
                "principle_ids": list(self.principle_ids)}


class Judgment(Provenance):
    """The judge's final word on one pair: labeled (p_first set), a tie, or unlabeled (reason set)."""

    key: str
    """Identity of (pair texts, judge config, template version, constitution version): the resume key."""
    pair_id: str
    pair_key: str
    per_principle: list[PrincipleVerdict]
    p_first: float | None = None
    orders_agree: bool | None = None
    reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    component_p: list[float | None] = Field(default_factory=list)
    """The probabilities this label aggregates: one per self-consistency sample, or one per ensemble member
    (None: that one failed). Empty for a single reading."""
    spread: float | None = None
    """Standard deviation of the readable `component_p` (how much the samples or members disagree)."""
    vote_share: float | None = None
    """Share of the readable `component_p` preferring response 1 (an exact 0.5 counts half)."""
    members: list[Judgment] = Field(default_factory=list)
    """Ensembles: each member judge's own judgment of the pair."""
    failed_members: list[str] = Field(default_factory=list)
    """Ensembles: members that gave no usable reading for this pair (their reasons are in `members`)."""

    @property
    def labeled(self) -> bool:
        return self.p_first is not None and self.reason is None

    @property
    def tie(self) -> bool:
        """The judge read both responses as exactly equal: a real reading with no preference, not a failure."""
        return self.p_first is None and (self.reason or "").startswith(TIE_PREFIX)

    @property
    def final(self) -> bool:
        """Nothing to gain by judging again: labeled, or a tie (the same judge would tie again)."""
        return self.labeled or self.tie

    @property
    def outcome(self) -> float | None:
        """P(response_1 better) as every consumer reads it: the label, 0.5 for a tie (a real reading with no
        preference: ranking counts it as half a win, the audit as a tie verdict), None when unlabeled."""
        if self.labeled:
            return self.p_first
        return 0.5 if self.tie else None

    def order_verdicts(self) -> list[OrderVerdict]:
        """Every order reading behind this judgment, ensemble members' included."""
        own = [o for pv in self.per_principle for o in pv.orders]
        return own + [o for member in self.members for o in member.order_verdicts()]
