"""The pairwise judge: rendering, order swapping, verdict reading and combination, written once above
the backends. A pair the judge cannot read is returned unlabeled with its reason, never guessed.
"""

from __future__ import annotations

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.config import JudgeConfig
from rlaif.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template
from rlaif.records import CandidatePair, Judgment, OrderVerdict, PrincipleVerdict, content_key
from rlaif.verdicts import calibrate, combine_orders, read_verdict

__all__ = ["PairwiseJudge"]


class PairwiseJudge:
    """Compares two responses under principles of a constitution, in both orders."""

    def __init__(
        self,
        config: JudgeConfig,
        backend: Backend,
        template: JudgeTemplate | None = None,
        constitution: Constitution | None = None,
    ):
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

    def request(self, pair: CandidatePair, principle: Principle, order: str) -> CompletionRequest:
        first, second = (pair.response_1, pair.response_2) if order == "12" else (pair.response_2, pair.response_1)
        messages = self.template.render(
            principle=principle.model_dump(), prompt=pair.prompt, response_a=first, response_b=second
        )
        return CompletionRequest(messages=messages, max_tokens=1, temperature=0.0, top_logprobs=self.config.verdict.top_logprobs)

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """Judge a batch of pairs with one backend call (so the backend can batch and share prefixes)."""
        plan = []
        for index, pair in enumerate(pairs):
            for principle in self.principles_for(pair):
                for order in self.orders:
                    plan.append((index, principle, order, self.request(pair, principle, order)))
        completions = self.backend.complete([step[3] for step in plan])
        # Grouped by position in the batch, not by id: two pairs may share an id and must not mix.
        verdicts: list[dict[str, list[OrderVerdict]]] = [{} for _ in pairs]
        costs: list[list[Completion]] = [[] for _ in pairs]
        for (index, principle, order, request), completion in zip(plan, completions):
            verdicts[index].setdefault(principle.id, []).append(self._order_verdict(order, request, completion))
            costs[index].append(completion)
        return [self._judgment(pair, verdicts[i], costs[i]) for i, pair in enumerate(pairs)]

    def _order_verdict(self, order: str, request: CompletionRequest, completion: Completion) -> OrderVerdict:
        """Read one order's verdict; the full judge prompt is kept with it for audit."""
        base = dict(order=order, messages=request.messages, prompt_tokens=completion.prompt_tokens)
        if completion.error:
            return OrderVerdict(**base, error=completion.error)
        choice = completion.choices[0] if completion.choices else None
        if choice is None or not choice.logprobs:
            return OrderVerdict(**base, error="backend returned no logprobs for the verdict token",
                                raw_output=choice.text if choice else "")
        top = choice.logprobs[0]
        reading = read_verdict(top, self.config.verdict.labels)
        common = dict(**base, top_logprobs=top, raw_output=choice.text, completion_tokens=completion.completion_tokens)
        if reading.reason:
            return OrderVerdict(**common, error=reading.reason)
        if reading.mass < self.config.verdict.min_verdict_mass:
            return OrderVerdict(**common, verdict_mass=reading.mass,
                                error=f"verdict tokens carry {reading.mass:.3f} of the probability, below min_verdict_mass {self.config.verdict.min_verdict_mass}")
        p_a = calibrate(reading.p_a, self.config.verdict.temperature)
        return OrderVerdict(**common, verdict_mass=reading.mass, p_first=p_a if order == "12" else 1.0 - p_a)

    def _judgment(self, pair: CandidatePair, by_principle: dict[str, list[OrderVerdict]], completions: list[Completion]) -> Judgment:
        per_principle = [_principle_verdict(pid, orders) for pid, orders in by_principle.items()]
        errors = [f"{pv.principle_id}: {pv.error}" for pv in per_principle if pv.error]
        p_first = agree = None
        reason = "; ".join(errors) or None
        if not errors:
            p_first = sum(pv.p_first for pv in per_principle) / len(per_principle)
            agreements = [pv.orders_agree for pv in per_principle]
            agree = None if None in agreements else all(agreements)
            if p_first == 0.5:
                reason, p_first = "tie: the judge gave both responses exactly equal probability", None
        return Judgment(
            key=self.key(pair), pair_id=pair.id, pair_key=pair.key, judge=self.config.name, model=self.backend.model,
            backend=self.backend.name, template=self.template.name, template_version=self.template.version,
            constitution_version=self.constitution.version, principle_ids=list(by_principle),
            per_principle=per_principle, p_first=p_first, orders_agree=agree, reason=reason,
            prompt_tokens=sum(c.prompt_tokens for c in completions),
            completion_tokens=sum(c.completion_tokens for c in completions),
            cost_usd=sum(c.cost_usd for c in completions), latency_s=sum(c.latency_s for c in completions),
        )


def _principle_verdict(principle_id: str, orders: list[OrderVerdict]) -> PrincipleVerdict:
    errors = [f"order {o.order}: {o.error}" for o in orders if o.error]
    if errors:
        return PrincipleVerdict(principle_id=principle_id, orders=orders, error="; ".join(errors))
    by_order = {o.order: o.p_first for o in orders}
    p_first, agree = combine_orders(by_order["12"], by_order.get("21"))
    return PrincipleVerdict(principle_id=principle_id, orders=orders, p_first=p_first, orders_agree=agree)
