"""The pairwise judge, written once above the backends.

A `PairwiseJudge` renders each pair under its principles in both orders and reads the verdict one of three
ways (`verdict.parser`): the verdict-token logprobs (soft), a label parsed from a short reply (hard), or
`auto` (logprobs where the backend gives them, else the text). In reasoning mode the judge first writes a
rationale ending in "Verdict: A|B"; a second, prefill-only request that ends right after the rationale's last
marker reads the verdict probability. With self-consistency every item is judged N times and aggregated.
A pair that cannot be read is returned unlabeled with its reason, never guessed.

The work is in three pieces: `planning` (which requests), `reading` (completions -> order verdicts, pure) and
`combining` (order verdicts -> the label, pure); this class sends the requests and puts the pieces together.
"""

from __future__ import annotations

from typing import Any

from rlaif.backends.base import Backend, CompletionRequest
from rlaif.config.judge import JudgeConfig
from rlaif.judging.base import Steps, run_steps
from rlaif.judging.combining import combine_readings, usage
from rlaif.judging.identity import single_identity
from rlaif.judging.planning import Reading, first_request, plan_readings, prefill_request
from rlaif.judging.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template
from rlaif.judging.reading import order_verdict, rationale_of, read_prefill, read_rationale, read_reply
from rlaif.records import CandidatePair, Judgment, Message

__all__ = ["PairwiseJudge"]


class PairwiseJudge:
    """Compares two responses under principles of a constitution, in both orders."""

    def __init__(self, config: JudgeConfig, backend: Backend, template: JudgeTemplate | None = None,
                 constitution: Constitution | None = None):
        self.config, self.backend, self.name = config, backend, config.name
        self.template = template or load_template(config.template)
        self.constitution = constitution or load_constitution(config.constitution)
        self.identity = single_identity(config, self.template, self.constitution)  # a config no judge can use fails here
        self.fingerprint = self.identity.fingerprint
        self.orders = ("12", "21") if config.both_orders else ("12",)
        self._principle_dicts: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}

    def key(self, pair: CandidatePair) -> str:
        """The resume key of a pair under this judge (remembered for the pairs of the last few batches: the label
        stage asks before judging and the judgment records it)."""
        key = self._keys.get(pair.key)
        if key is None:
            if len(self._keys) >= 65536:
                self._keys.clear()
            key = self._keys[pair.key] = self.identity.key(pair)
        return key

    def describe(self) -> dict[str, Any]:
        return self.identity.describe()

    def principles_for(self, pair: CandidatePair) -> list[Principle]:
        sel = self.config.principles
        return self.constitution.select(sel.mode, sel.k, sel.ids, sel.seed, pair.key)

    def messages(self, pair: CandidatePair, principle: Principle, order: str) -> list[Message]:
        first, second = (pair.response_1, pair.response_2) if order == "12" else (pair.response_2, pair.response_1)
        return self.template.render(principle=self._principle_fields(principle), prompt=pair.prompt, response_a=first,
                                    response_b=second, marker=self.config.reasoning.marker)

    def _principle_fields(self, principle: Principle) -> dict[str, Any]:
        """The principle as a template reads it: one dict per principle, the same object for every pair (templates
        cannot change their variables), so the template can key its rendered blocks by it cheaply."""
        fields = self._principle_dicts.get(principle.id)
        if fields is None or fields["text"] != principle.text or fields["name"] != principle.name:
            fields = self._principle_dicts[principle.id] = principle.model_dump()
        return fields

    def rendered(self, pair: CandidatePair) -> list[list[Message]]:
        return [self.messages(pair, p, order) for p in self.principles_for(pair) for order in self.orders]

    def request(self, pair: CandidatePair, principle: Principle, order: str, seed: int | None = None) -> CompletionRequest:
        """The first request of one reading: the verdict itself, or the rationale in reasoning mode."""
        return first_request(self.config, self.messages(pair, principle, order), seed)

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """Judge a batch: one backend call for all first requests (and, in reasoning mode, one for all prefills)."""
        return run_steps(self.steps(pairs))

    def steps(self, pairs: list[CandidatePair]) -> Steps[list[Judgment]]:
        """`judge` as steps: it yields its backend requests and is sent their completions."""
        readings = plan_readings(self.config, pairs, self.orders, self.principles_for, self.messages)
        completions = yield self.backend, [first_request(self.config, r.messages, r.seed) for r in readings]
        for reading, completion in zip(readings, completions):
            reading.completions.append(completion)
        if self.config.reasoning.enabled:
            yield from self._read_reasoned(readings)
        else:
            for reading in readings:
                reading.verdict = read_reply(self.config, reading, reading.completions[0])
        # Grouped by position in the batch, not by id: two pairs may share an id and must not mix.
        grouped: list[list[Reading]] = [[] for _ in pairs]
        for reading in readings:
            grouped[reading.index].append(reading)
        return [self._judgment(pair, grouped[i]) for i, pair in enumerate(pairs)]

    def _read_reasoned(self, readings: list[Reading]) -> Steps[None]:
        """Rationales are in; read the written verdicts, then send every prefill request in one backend call."""
        pending: list[tuple[Reading, str]] = []
        for reading in readings:
            rationale, error = rationale_of(reading)
            if rationale is None:
                reading.verdict = order_verdict(reading, error=error)
            elif self.config.verdict.parser == "text":
                reading.verdict = read_rationale(self.config, reading, rationale, note=None)
            else:
                pending.append((reading, rationale))
        requests = [prefill_request(self.config, r.messages, rationale) for r, rationale in pending]
        prefills = (yield self.backend, requests) if requests else []
        for (reading, rationale), completion in zip(pending, prefills):
            reading.completions.append(completion)
            reading.verdict = read_prefill(self.config, reading, rationale, completion)

    def _judgment(self, pair: CandidatePair, readings: list[Reading]) -> Judgment:
        sc = self.config.self_consistency
        per_principle, fields = combine_readings(readings, sc.samples, sc.aggregate)
        return Judgment(
            key=self.key(pair), pair_id=pair.id, pair_key=pair.key, judge=self.name, model=self.backend.model,
            backend=self.backend.name, template=self.template.name, template_version=self.template.version,
            constitution_version=self.constitution.version, principle_ids=[pv.principle_id for pv in per_principle],
            per_principle=per_principle, **usage([c for r in readings for c in r.completions]), **fields,
        )
