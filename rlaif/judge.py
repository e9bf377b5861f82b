"""The pairwise judge and judge ensembles, written once above the backends.

A `PairwiseJudge` renders each pair under its principles in both orders and reads the verdict one of three
ways (`verdict.parser`): the verdict-token logprobs (soft), a label parsed from a short reply (hard), or
`auto` (logprobs where the backend gives them, else the text). In reasoning mode the judge first writes a
rationale ending in "Verdict: A|B"; a second, prefill-only request that ends right after the rationale's last
marker reads the verdict probability. With self-consistency every item is judged N times and aggregated.
An `EnsembleJudge` asks several judges and aggregates them. A pair that cannot be read is returned
unlabeled with its reason, never guessed. `make_judge` builds either from a judge file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.config import EnsembleJudgeConfig, JudgeConfig, load_judge_spec
from rlaif.errors import ConfigError
from rlaif.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template, neutralize
from rlaif.records import TIE_PREFIX as _TIE
from rlaif.records import CandidatePair, Judgment, Message, OrderVerdict, PrincipleVerdict, content_key
from rlaif.verdicts import aggregate, calibrate, combine_orders, parse_marked, parse_reply, prefix_through_last_marker, read_verdict

__all__ = ["PairwiseJudge", "EnsembleJudge", "make_judge", "sampling_problem", "TEXT_REPLY_TOKENS"]

TEXT_REPLY_TOKENS = 8
"""Tokens asked for when the verdict is parsed from a short reply (`text`/`auto` parsers without reasoning)."""


def sampling_problem(config: JudgeConfig) -> str | None:
    """Why self-consistency samples would all be identical (None when they can differ)."""
    n = config.self_consistency.samples
    if n > 1 and not (config.reasoning.enabled and config.reasoning.temperature > 0):
        return (f"self_consistency.samples is {n}, but the samples would be identical: it needs reasoning.enabled "
                f"with reasoning.temperature > 0")
    return None


@dataclass
class _Step:
    """One (pair, principle, order, sample) reading and the completions it took."""

    index: int
    principle: Principle
    order: str
    sample: int
    messages: list[Message]
    seed: int | None
    completions: list[Completion] = field(default_factory=list)
    verdict: OrderVerdict | None = None


class PairwiseJudge:
    """Compares two responses under principles of a constitution, in both orders."""

    def __init__(
        self,
        config: JudgeConfig,
        backend: Backend,
        template: JudgeTemplate | None = None,
        constitution: Constitution | None = None,
    ):
        problem = sampling_problem(config)
        if problem:
            raise ConfigError(f"judge {config.name}: {problem}")
        self.config = config
        self.backend = backend
        self.template = template or load_template(config.template)
        self.constitution = constitution or load_constitution(config.constitution)
        self.orders = ("12", "21") if config.both_orders else ("12",)
        self.fingerprint = content_key(
            config.model_dump(mode="json"), self.template.version, self.constitution.version
        )

    def key(self, pair: CandidatePair) -> str:
        """Identity of this judge's label for this pair: reused on rerun, never redone."""
        return content_key(pair.key, self.fingerprint)

    def principles_for(self, pair: CandidatePair) -> list[Principle]:
        sel = self.config.principles
        return self.constitution.select(sel.mode, sel.k, sel.ids, sel.seed, pair.key)

    def messages(self, pair: CandidatePair, principle: Principle, order: str) -> list[Message]:
        first, second = (pair.response_1, pair.response_2) if order == "12" else (pair.response_2, pair.response_1)
        return self.template.render(principle=principle.model_dump(), prompt=pair.prompt, response_a=first,
                                    response_b=second, marker=self.config.reasoning.marker)

    def request(self, pair: CandidatePair, principle: Principle, order: str, seed: int | None = None) -> CompletionRequest:
        """The first request of one reading: the verdict itself, or the rationale in reasoning mode."""
        return self._first_request(self.messages(pair, principle, order), seed)

    def _first_request(self, messages: list[Message], seed: int | None) -> CompletionRequest:
        cfg, verdict = self.config, self.config.verdict
        if cfg.reasoning.enabled:
            return CompletionRequest(messages=messages, max_tokens=cfg.reasoning.max_tokens,
                                     temperature=cfg.reasoning.temperature, seed=seed)
        if verdict.parser == "first_token_logprobs":
            return CompletionRequest(messages=messages, max_tokens=1, temperature=0.0, top_logprobs=verdict.top_logprobs)
        return CompletionRequest(messages=messages, max_tokens=TEXT_REPLY_TOKENS, temperature=0.0,
                                 top_logprobs=verdict.top_logprobs if verdict.parser == "auto" else 0)

    def _prefill_request(self, messages: list[Message], rationale: str) -> CompletionRequest:
        """Prefill-only: the judge prompt, then the rationale through its last marker; the next token is the verdict.

        The rationale may quote the texts under judgment, so it is defused like them (`neutralize`): it cannot
        smuggle chat control tokens into the prompt."""
        prefix = neutralize(prefix_through_last_marker(rationale, self.config.reasoning.marker))
        return CompletionRequest(messages=[*messages, Message(role="assistant", content=prefix)], max_tokens=1,
                                 temperature=0.0, top_logprobs=self.config.verdict.top_logprobs, continue_final=True)

    def _steps(self, pairs: list[CandidatePair]) -> list[_Step]:
        samples = self.config.self_consistency.samples
        sampled = self.config.reasoning.enabled and self.config.reasoning.temperature > 0
        steps = []
        for index, pair in enumerate(pairs):
            for principle in self.principles_for(pair):
                messages = {order: self.messages(pair, principle, order) for order in self.orders}
                for sample in range(samples):
                    for order in self.orders:
                        seed = int(content_key(pair.key, principle.id, order, sample), 16) % 2**31 if sampled else None
                        steps.append(_Step(index, principle, order, sample, messages[order], seed))
        return steps

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """Judge a batch: one backend call for all first requests (and, in reasoning mode, one for all prefills)."""
        steps = self._steps(pairs)
        completions = self.backend.complete([self._first_request(s.messages, s.seed) for s in steps])
        for step, completion in zip(steps, completions):
            step.completions.append(completion)
        if self.config.reasoning.enabled:
            self._read_reasoned(steps)
        else:
            for step in steps:
                step.verdict = self._read_reply(step, step.completions[0])
        # Grouped by position in the batch, not by id: two pairs may share an id and must not mix.
        grouped: list[list[_Step]] = [[] for _ in pairs]
        for step in steps:
            grouped[step.index].append(step)
        return [self._judgment(pair, grouped[i]) for i, pair in enumerate(pairs)]

    # --- reading one order --------------------------------------------------------------------------------

    def _verdict(self, step: _Step, **fields) -> OrderVerdict:
        """An order verdict with the prompt kept for audit and every request's tokens counted."""
        return OrderVerdict(order=step.order, sample=step.sample, messages=step.messages,
                            prompt_tokens=sum(c.prompt_tokens for c in step.completions),
                            completion_tokens=sum(c.completion_tokens for c in step.completions), **fields)

    def _soft(self, order: str, top: dict[str, float]) -> tuple[dict, str | None]:
        """Fields of a logprob reading at the verdict position, or the reason it cannot be read."""
        cfg = self.config.verdict
        reading = read_verdict(top, cfg.labels)
        if reading.reason:
            return {}, reading.reason
        if reading.mass < cfg.min_verdict_mass:
            return {"verdict_mass": reading.mass}, (f"verdict tokens carry {reading.mass:.3f} of the probability, "
                                                    f"below min_verdict_mass {cfg.min_verdict_mass}")
        p_a = calibrate(reading.p_a, cfg.temperature)
        return dict(p_first=p_a if order == "12" else 1.0 - p_a, verdict_mass=reading.mass, parsed_from="logprobs"), None

    @staticmethod
    def _hard(order: str, label: str) -> dict:
        """A written label as a hard probability that response_1 is better."""
        return dict(p_first=1.0 if (label == "A") == (order == "12") else 0.0, parsed_from="text", text_verdict=label)

    def _read_reply(self, step: _Step, completion: Completion) -> OrderVerdict:
        """Without reasoning: the verdict from the first-position logprobs or the short reply, per the parser."""
        if completion.error:
            return self._verdict(step, error=completion.error)
        choice = completion.choices[0] if completion.choices else None
        if choice is None:
            return self._verdict(step, error="backend returned no output: no logprobs for the verdict token and no text")
        parser, top = self.config.verdict.parser, choice.logprobs[0] if choice.logprobs else {}
        common = dict(top_logprobs=top, raw_output=choice.text)
        if parser == "first_token_logprobs" and not top:
            return self._verdict(step, error="backend returned no logprobs for the verdict token", raw_output=choice.text)
        note = None
        if parser != "text" and top:
            fields, reason = self._soft(step.order, top)
            if not reason or parser == "first_token_logprobs":
                return self._verdict(step, **common, **fields, error=reason)
            note = f"logprobs unreadable ({reason}); read the text"
        text = parse_reply(choice.text, self.config.verdict.labels, self.config.reasoning.marker)
        if text.label is None:
            return self._verdict(step, **common, note=note, error=text.reason)
        return self._verdict(step, **common, **self._hard(step.order, text.label), note=note)

    def _read_reasoned(self, steps: list[_Step]) -> None:
        """Rationales are in; read the written verdicts, then send every prefill request in one backend call."""
        cfg = self.config
        pending: list[tuple[_Step, str]] = []
        for step in steps:
            completion = step.completions[0]
            choice = completion.choices[0] if completion.choices else None
            if completion.error or choice is None:
                step.verdict = self._verdict(step, error=completion.error or "backend returned no rationale")
            elif cfg.verdict.parser == "text":
                step.verdict = self._from_text(step, choice.text, note=None)
            else:
                pending.append((step, choice.text))
        prefills = self.backend.complete([self._prefill_request(s.messages, r) for s, r in pending]) if pending else []
        for (step, rationale), completion in zip(pending, prefills):
            step.completions.append(completion)
            step.verdict = self._read_prefill(step, rationale, completion)

    def _from_text(self, step: _Step, rationale: str, note: str | None, **extra) -> OrderVerdict:
        text = parse_marked(rationale, self.config.reasoning.marker, self.config.verdict.labels)
        if text.label is None:
            reason = f"{note}; {text.reason}" if note else text.reason
            return self._verdict(step, rationale=rationale, error=reason, **extra)
        return self._verdict(step, rationale=rationale, note=note, **self._hard(step.order, text.label), **extra)

    def _read_prefill(self, step: _Step, rationale: str, completion: Completion) -> OrderVerdict:
        """The soft verdict after the rationale; if the prefill gives no readable logprobs, the written verdict."""
        choice = completion.choices[0] if completion.choices else None
        top = choice.logprobs[0] if choice and choice.logprobs else {}
        if completion.error or not top:
            why = completion.error or "no logprobs at the verdict position"
            return self._from_text(step, rationale, note=f"prefill request: {why}; used the written verdict")
        fields, reason = self._soft(step.order, top)
        extra = dict(top_logprobs=top, raw_output=choice.text)
        if reason:
            return self._from_text(step, rationale, note=f"prefill request: {reason}; used the written verdict", **extra)
        written = parse_marked(rationale, self.config.reasoning.marker, self.config.verdict.labels).label
        return self._verdict(step, rationale=rationale, text_verdict=written, **fields, **extra)

    # --- combining -------------------------------------------------------------------------------------------

    def _judgment(self, pair: CandidatePair, steps: list[_Step]) -> Judgment:
        by_principle: dict[str, list[OrderVerdict]] = {}
        for step in steps:
            by_principle.setdefault(step.principle.id, []).append(step.verdict)
        n = self.config.self_consistency.samples
        per_principle = [_principle_verdict(pid, orders) for pid, orders in by_principle.items()]
        sample_p, failures = [], []
        for sample in range(n):
            pvs = [_principle_verdict(pid, [o for o in orders if o.sample == sample]) for pid, orders in by_principle.items()]
            errors = [f"{pv.principle_id}: {pv.error}" for pv in pvs if pv.error]
            sample_p.append(None if errors else sum(pv.p_first for pv in pvs) / len(pvs))
            failures.append("; ".join(errors))
        completions = [c for step in steps for c in step.completions]
        fields = _aggregate_fields(sample_p, self.config.self_consistency.aggregate, failures, "samples") if n > 1 else \
            {"p_first": sample_p[0], "reason": failures[0] or None}
        if fields["p_first"] is not None:
            agreements = [pv.orders_agree for pv in per_principle]
            fields["orders_agree"] = None if None in agreements else all(agreements)
        if fields["p_first"] == 0.5:
            tie = "the judge gave both responses exactly equal probability" if n == 1 else "the samples split evenly"
            fields.update(p_first=None, reason=_TIE + tie)
        return Judgment(
            key=self.key(pair), pair_id=pair.id, pair_key=pair.key, judge=self.config.name, model=self.backend.model,
            backend=self.backend.name, template=self.template.name, template_version=self.template.version,
            constitution_version=self.constitution.version, principle_ids=list(by_principle),
            per_principle=per_principle, prompt_tokens=sum(c.prompt_tokens for c in completions),
            completion_tokens=sum(c.completion_tokens for c in completions),
            cost_usd=sum(c.cost_usd for c in completions), latency_s=sum(c.latency_s for c in completions), **fields,
        )


def _principle_verdict(principle_id: str, orders: list[OrderVerdict]) -> PrincipleVerdict:
    """Both orders under one principle, combined per sample and averaged over the samples that were read."""
    by_sample: dict[int, list[OrderVerdict]] = {}
    for o in orders:
        by_sample.setdefault(o.sample, []).append(o)
    read, errors = [], []
    for sample, group in by_sample.items():
        bad = [f"order {o.order}: {o.error}" for o in group if o.error]
        if bad:
            errors.append(("" if len(by_sample) == 1 else f"sample {sample}: ") + "; ".join(bad))
        else:
            read.append({o.order: o.p_first for o in group})
    if not read:
        return PrincipleVerdict(principle_id=principle_id, orders=orders, error="; ".join(errors))
    p12 = sum(r["12"] for r in read) / len(read)
    p21 = sum(r["21"] for r in read) / len(read) if "21" in read[0] else None
    p_first, agree = combine_orders(p12, p21)
    return PrincipleVerdict(principle_id=principle_id, orders=orders, p_first=p_first, orders_agree=agree)


def _aggregate_fields(component_p: list[float | None], how: str, failures: list[str], what: str) -> dict:
    """Judgment fields for a label aggregated over samples or members; unlabeled only when none was read."""
    read = [p for p in component_p if p is not None]
    if not read:
        reason = f"all {len(component_p)} {what} failed: " + "; ".join(f"[{i}] {f}" for i, f in enumerate(failures) if f)
        return {"p_first": None, "reason": reason, "component_p": component_p}
    p, std, share = aggregate(read, how)
    return {"p_first": p, "reason": None, "component_p": component_p, "spread": std, "vote_share": share}


@dataclass(frozen=True)
class _Composite:
    """Name and version of what an ensemble's members use (templates, constitutions), for the manifest."""

    name: str
    version: str


class EnsembleJudge:
    """Several judges on the same pairs; their probabilities are aggregated (mean or majority vote).

    Exposes what the labeling stage uses of a judge: `config.name`, `fingerprint`, `key(pair)`, `judge(pairs)`,
    and `template`/`constitution` name and version.
    """

    def __init__(self, config: EnsembleJudgeConfig, members: list[PairwiseJudge]):
        self.config, self.members = config, members
        self.fingerprint = content_key(config.model_dump(mode="json"), [m.fingerprint for m in members])
        self.template = _Composite("+".join(m.template.name for m in members), "+".join(m.template.version for m in members))
        self.constitution = _Composite("+".join(m.constitution.name for m in members),
                                       "+".join(m.constitution.version for m in members))

    def key(self, pair: CandidatePair) -> str:
        return content_key(pair.key, self.fingerprint)

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """Each member judges the whole batch (one or two backend calls each), then each pair is aggregated."""
        by_member = [member.judge(pairs) for member in self.members]
        return [self._judgment(pair, [judged[i] for judged in by_member]) for i, pair in enumerate(pairs)]

    def _judgment(self, pair: CandidatePair, members: list[Judgment]) -> Judgment:
        probabilities = [_member_p(m) for m in members]
        failures = [f"{m.judge}: {m.reason}" if p is None else "" for m, p in zip(members, probabilities)]
        fields = _aggregate_fields(probabilities, self.config.ensemble.aggregate, failures, "members")
        if fields["p_first"] is not None:
            agreements = [m.orders_agree for m, p in zip(members, probabilities) if p is not None]
            fields["orders_agree"] = None if None in agreements else all(agreements)
        if fields["p_first"] == 0.5:
            fields.update(p_first=None, reason=_TIE + "the members split evenly")
        unique = lambda values: "+".join(dict.fromkeys(values))  # noqa: E731
        return Judgment(
            key=self.key(pair), pair_id=pair.id, pair_key=pair.key, judge=self.config.name,
            model=unique(m.model for m in members), backend=unique(m.backend for m in members),
            template=self.template.name, template_version=self.template.version,
            constitution_version=self.constitution.version,
            principle_ids=list(dict.fromkeys(pid for m in members for pid in m.principle_ids)), per_principle=[],
            members=members, failed_members=[m.judge for m, p in zip(members, probabilities) if p is None],
            prompt_tokens=sum(m.prompt_tokens for m in members), completion_tokens=sum(m.completion_tokens for m in members),
            cost_usd=sum(m.cost_usd for m in members), latency_s=sum(m.latency_s for m in members), **fields,
        )


def _member_p(judgment: Judgment) -> float | None:
    """A member's P(response 1 better): its label, 0.5 for a tie (a real reading), None if it failed."""
    if judgment.labeled:
        return judgment.p_first
    return 0.5 if judgment.tie else None


def make_judge(spec: str | Path | JudgeConfig | EnsembleJudgeConfig, backends) -> PairwiseJudge | EnsembleJudge:
    """A judge from a catalogue name, a path, or a loaded config.

    `backends` is a `BackendPool` (each judge, and each ensemble member, gets its own backend config's
    engine, opened once) or a single `Backend` that every judge uses.
    """
    if isinstance(spec, (str, Path)):
        spec = load_judge_spec(spec)
    if isinstance(spec, EnsembleJudgeConfig):
        members = []
        for name in spec.ensemble.members:
            member = load_judge_spec(name)
            if isinstance(member, EnsembleJudgeConfig):
                raise ConfigError(f"ensemble {spec.name}: member {name} is itself an ensemble; list its members instead")
            members.append(make_judge(member, backends))
        return EnsembleJudge(spec, members)
    if spec.mode != "pairwise":
        raise ConfigError(f"judge {spec.name} is a {spec.mode} judge; labeling pairs needs a pairwise judge")
    backend = backends if hasattr(backends, "complete") else backends.get(spec.backend)
    return PairwiseJudge(spec, backend)
