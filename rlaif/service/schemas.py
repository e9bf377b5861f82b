"""The request and reply bodies of the API (pydantic: validated on the way in, documented at /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rlaif.records import non_blank

__all__ = [
    "PairIn", "PairwiseRequest", "PairResult", "PairwiseReply", "ItemIn", "PointwiseRequest", "ItemResult",
    "PointwiseReply", "Usage", "RewardRequest", "RewardReply", "OpenRLHFRewardRequest", "BatchCreate", "AuditCreate",
    "CampaignCreate", "CampaignLink", "AnnotatorName", "MAX_ANNOTATORS", "JUDGE_ENDPOINTS",
]

JUDGE_ENDPOINTS = ("/v1/judge/pairwise", "/v1/judge/pointwise")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairIn(_Body):
    """Two responses to one prompt. `id` is yours (default: the pair's position in the request)."""

    id: str | None = Field(None, min_length=1)
    prompt: str
    response_1: str
    response_2: str

    _texts = field_validator("prompt", "response_1", "response_2")(non_blank)


class PairwiseRequest(_Body):
    judge: str | None = Field(None, description="a pairwise judge of GET /v1/judges (default: the first one)")
    pairs: list[PairIn] = Field(min_length=1)


class _Judged(BaseModel):
    """Who judged (the provenance columns of our dataset rows) and what it took."""

    judge: str
    judge_model: str
    judge_backend: str
    template: str
    template_version: str
    constitution_version: str
    principle_ids: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class PairResult(_Judged):
    """The fields a preference row of the dataset carries; `label` is null (with `reason`) when the judge gave none."""

    pair_id: str
    label: Literal["response_1", "response_2", "tie"] | None
    reason: str | None = None
    probability: float | None = Field(None, description="the judge's probability that the preferred response is better")
    p_response_1: float | None = None
    chosen_is_response_1: bool | None = None
    orders_agree: bool | None = None
    per_principle_p: list[float | None] = Field(default_factory=list)
    spread: float | None = None
    vote_share: float | None = None
    latency_s: float = 0.0


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, results: list[PairResult] | list[ItemResult]) -> Usage:
        return cls(prompt_tokens=sum(r.prompt_tokens for r in results),
                   completion_tokens=sum(r.completion_tokens for r in results), cost_usd=sum(r.cost_usd for r in results))


class PairwiseReply(BaseModel):
    object: Literal["judge.pairwise"] = "judge.pairwise"
    judge: str
    results: list[PairResult]
    usage: Usage


class ItemIn(_Body):
    id: str | None = Field(None, min_length=1)
    prompt: str
    response: str

    _texts = field_validator("prompt", "response")(non_blank)


class PointwiseRequest(_Body):
    judge: str | None = Field(None, description="a pointwise judge of GET /v1/judges (default: the first one)")
    items: list[ItemIn] = Field(min_length=1)


class ItemResult(_Judged):
    """A response's score on the judge's rubric; `score` is null (with `reason`) when the judge gave none."""

    item_id: str
    score: float | None
    reason: str | None = None
    per_principle: dict[str, float | None] = Field(default_factory=dict)
    min_score: int
    max_score: int


class PointwiseReply(BaseModel):
    object: Literal["judge.pointwise"] = "judge.pointwise"
    judge: str
    results: list[ItemResult]
    usage: Usage


class RewardRequest(_Body):
    """One reward per completion. With `references` (one per completion) and a pairwise judge, the reward is the
    judge's probability that the completion is better than its reference (0.5 for a tie); without, a pointwise
    judge's score. null (with the reason) when the judge could not read a verdict, never a made-up number."""

    judge: str | None = None
    prompts: list[str] = Field(min_length=1)
    completions: list[str] = Field(min_length=1)
    references: list[str] | None = None


class RewardReply(BaseModel):
    object: Literal["reward"] = "reward"
    judge: str
    kind: Literal["pairwise_vs_reference", "pointwise_score"]
    rewards: list[float | None]
    reasons: list[str | None]


class OpenRLHFRewardRequest(BaseModel):
    """OpenRLHF's remote reward request: `query` holds prompt + response texts; `prompts` the prompt part of each,
    `labels` (its --label_key column) a reference response for each, when given."""

    model_config = ConfigDict(extra="allow")
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


class BatchCreate(_Body):
    """OpenAI's batch request; `metadata.judge` picks the judge (default: the one each line's body names, else the
    first of the endpoint's kind)."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


class AuditCreate(_Body):
    """An audit of a judge against human labels: a gold file (judged now by `judge`, or matched against a
    finished batch's labels with `batch_id`), or a labeling campaign's human labels (`campaign_id`)."""

    gold_file_id: str | None = None
    batch_id: str | None = None
    campaign_id: str | None = None
    judge: str | None = None
    min_kappa: float | None = None
    min_accuracy: float | None = None
    tie_margin: float = Field(0.0, ge=0, lt=0.5)
    bootstrap: int = Field(1000, ge=10, le=20000)
    seed: int = 0


MAX_ANNOTATORS = 100
"""The most labeling links (annotators) one campaign has."""

AnnotatorName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
"""An annotator's name: trimmed, 1 to 64 characters."""


class CampaignCreate(_Body):
    """Draw the calibration sample of a finished pairwise batch for people to label in the browser. Each annotator gets
    a labeling link of their own, bound to their name (default: one annotator, "annotator-1")."""

    batch_id: str
    n: int = Field(50, ge=1, le=5000)
    strategy: Literal["uniform", "stratified", "least-confident"] = "stratified"
    seed: int = 0
    annotators: list[AnnotatorName] = Field(default_factory=lambda: ["annotator-1"], min_length=1,
                                            max_length=MAX_ANNOTATORS)

    @field_validator("annotators")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"each annotator gets one link: {', '.join(map(repr, repeated))} given more than once")
        return names


class CampaignLink(_Body):
    """A labeling link for one more annotator of a campaign."""

    annotator: AnnotatorName
