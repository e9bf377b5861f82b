"""Judge ensembles: several pairwise judges asked about the same pairs, their probabilities aggregated.

Each member judges the whole batch on its own backend; a member's tie counts as 0.5 (a real reading), a member
that could not read the pair is left out and listed. The pair is unlabeled only when every member failed.
"""

from __future__ import annotations

from typing import Any

from rlaif.config.judge import EnsembleJudgeConfig
from rlaif.judging.base import Steps, run_steps
from rlaif.judging.combining import aggregate_fields, all_agree, settle_tie
from rlaif.judging.identity import ensemble_identity
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.records import CandidatePair, Judgment, Message

__all__ = ["EnsembleJudge"]


def _joined(values) -> str:
    """Distinct values in order, joined with '+' (the members' models, backends, template names...)."""
    return "+".join(dict.fromkeys(values))


class EnsembleJudge:
    """Several judges on the same pairs; their probabilities are aggregated (mean or majority vote)."""

    def __init__(self, config: EnsembleJudgeConfig, members: list[PairwiseJudge]):
        self.config, self.members, self.name = config, members, config.name
        self.identity = ensemble_identity(config, [m.identity for m in members])
        self.fingerprint = self.identity.fingerprint

    def key(self, pair: CandidatePair) -> str:
        return self.identity.key(pair)

    def describe(self) -> dict[str, Any]:
        return self.identity.describe()

    def rendered(self, pair: CandidatePair) -> list[list[Message]]:
        return [messages for member in self.members for messages in member.rendered(pair)]

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """Each member judges the whole batch (one or two backend calls each), then each pair is aggregated."""
        return run_steps(self.steps(pairs))

    def steps(self, pairs: list[CandidatePair]) -> Steps[list[Judgment]]:
        """`judge` as steps: each member's steps in turn, each on its own backend."""
        by_member = []
        for member in self.members:
            by_member.append((yield from member.steps(pairs)))
        return [self._judgment(pair, [judged[i] for judged in by_member]) for i, pair in enumerate(pairs)]

    def _judgment(self, pair: CandidatePair, members: list[Judgment]) -> Judgment:
        probabilities = [m.outcome for m in members]
        failures = [f"{m.judge}: {m.reason}" if p is None else "" for m, p in zip(members, probabilities)]
        fields = aggregate_fields(probabilities, self.config.ensemble.aggregate, failures, "members")
        if fields["p_first"] is not None:
            fields["orders_agree"] = all_agree([m.orders_agree for m, p in zip(members, probabilities) if p is not None])
        return Judgment(
            key=self.key(pair), pair_id=pair.id, pair_key=pair.key, judge=self.name,
            model=_joined(m.model for m in members), backend=_joined(m.backend for m in members),
            template=self.identity.template, template_version=self.identity.template_version,
            constitution_version=self.identity.constitution_version,
            principle_ids=list(dict.fromkeys(pid for m in members for pid in m.principle_ids)), per_principle=[],
            members=members, failed_members=[m.judge for m, p in zip(members, probabilities) if p is None],
            prompt_tokens=sum(m.prompt_tokens for m in members), completion_tokens=sum(m.completion_tokens for m in members),
            cost_usd=sum(m.cost_usd for m in members), latency_s=sum(m.latency_s for m in members),
            **settle_tie(fields, "the members split evenly"),
        )
