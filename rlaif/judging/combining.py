"""Combining readings into a label. Pure: no backend, no I/O.

Both orders of one principle are averaged (position bias cancels); principles are averaged; self-consistency
samples and ensemble members are aggregated (mean or majority) with their spread. A pair is unlabeled only
when nothing could be read, and an exact 0.5 is a tie (`records.TIE_PREFIX`): a final reading, not a failure.
"""

from __future__ import annotations

from typing import Any

from rlaif.backends.base import Completion
from rlaif.judging.planning import Reading
from rlaif.judging.verdicts import aggregate, combine_orders
from rlaif.records import TIE_PREFIX, OrderVerdict, PrincipleVerdict

__all__ = ["principle_verdict", "aggregate_fields", "combine_readings", "all_agree", "settle_tie", "usage"]


def principle_verdict(principle_id: str, orders: list[OrderVerdict]) -> PrincipleVerdict:
    """Both orders under one principle, combined per sample and averaged over the samples that were read."""
    by_sample: dict[int, list[OrderVerdict]] = {}
    for o in orders:
        by_sample.setdefault(o.sample, []).append(o)
    read: list[dict[str, float]] = []
    errors: list[str] = []
    for sample, group in by_sample.items():
        bad = [f"order {o.order}: {o.error}" for o in group if o.error]
        if bad:
            errors.append(("" if len(by_sample) == 1 else f"sample {sample}: ") + "; ".join(bad))
        else:
            read.append({o.order: o.p_first for o in group if o.p_first is not None})  # no error: every order read
    if not read:
        return PrincipleVerdict(principle_id=principle_id, orders=orders, error="; ".join(errors))
    p12 = sum(r["12"] for r in read) / len(read)
    p21 = sum(r["21"] for r in read) / len(read) if "21" in read[0] else None
    p_first, agree = combine_orders(p12, p21)
    return PrincipleVerdict(principle_id=principle_id, orders=orders, p_first=p_first, orders_agree=agree)


def aggregate_fields(component_p: list[float | None], how: str, failures: list[str], what: str) -> dict[str, Any]:
    """Judgment fields for a label aggregated over samples or members; unlabeled only when none was read."""
    read = [p for p in component_p if p is not None]
    if not read:
        reason = f"all {len(component_p)} {what} failed: " + "; ".join(f"[{i}] {f}" for i, f in enumerate(failures) if f)
        return {"p_first": None, "reason": reason, "component_p": component_p}
    p, std, share = aggregate(read, how)
    return {"p_first": p, "reason": None, "component_p": component_p, "spread": std, "vote_share": share}


def all_agree(agreements: list[bool | None]) -> bool | None:
    """Did every component's two orders agree? None when any could not say (a single order)."""
    return None if None in agreements else all(agreements)


def settle_tie(fields: dict[str, Any], why: str) -> dict[str, Any]:
    """An exact 0.5 is a tie: no label, and the reason says so (the one mark `Judgment.tie` reads)."""
    if fields["p_first"] == 0.5:
        return {**fields, "p_first": None, "reason": TIE_PREFIX + why}
    return fields


def combine_readings(readings: list[Reading], samples: int, how: str) -> tuple[list[PrincipleVerdict], dict[str, Any]]:
    """One pair's readings -> its per-principle verdicts and the Judgment fields of its label."""
    by_principle: dict[str, list[OrderVerdict]] = {}
    for reading in readings:
        by_principle.setdefault(reading.principle.id, []).append(reading.verdict)  # type: ignore[arg-type]
    per_principle = [principle_verdict(pid, orders) for pid, orders in by_principle.items()]
    sample_p: list[float | None] = []
    failures = []
    for sample in range(samples):
        pvs = per_principle if samples == 1 else [  # one sample: the per-principle verdicts are its verdicts
            principle_verdict(pid, [o for o in orders if o.sample == sample]) for pid, orders in by_principle.items()]
        errors = [f"{pv.principle_id}: {pv.error}" for pv in pvs if pv.error]
        sample_p.append(None if errors else sum(pv.p_first for pv in pvs) / len(pvs))  # type: ignore[misc]
        failures.append("; ".join(errors))
    if samples > 1:
        fields = aggregate_fields(sample_p, how, failures, "samples")
    else:
        fields = {"p_first": sample_p[0], "reason": failures[0] or None}
    if fields["p_first"] is not None:
        fields["orders_agree"] = all_agree([pv.orders_agree for pv in per_principle])
    why = "the judge gave both responses exactly equal probability" if samples == 1 else "the samples split evenly"
    return per_principle, settle_tie(fields, why)


def usage(completions: list[Completion]) -> dict[str, Any]:
    """Tokens, cost and time of the requests behind a label."""
    return {"prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "cost_usd": sum(c.cost_usd for c in completions), "latency_s": sum(c.latency_s for c in completions)}
