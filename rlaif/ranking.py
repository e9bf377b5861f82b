"""Listwise ranking: K candidates per prompt, every pair judged (both orders), a Bradley-Terry fit per prompt.

    CandidateSet -> candidate_pairs -> PairwiseJudge (label_pairs) -> fit_bradley_terry -> Ranking -> rows

The fit maximises the Bradley-Terry likelihood of fractional wins (Newton's method on the log-strengths; the
same optimum Hunter's MM / Zermelo iteration reaches, in a few steps): a judgment with P(i better) = p adds
p wins to i and 1 - p to j. A tie (the judge gave exactly 0.5) adds half a win to each and is counted;
an unlabeled comparison adds nothing and is counted with its reason. Each candidate also plays `prior`
virtual games, half won and half lost, against a fixed reference of strength 1: this keeps undefeated and
winless candidates finite and pins the scale (strength 1 = the reference). When the comparison graph of a
prompt is disconnected, the order between its parts comes from the prior alone; the ranking says so.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from itertools import combinations
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlaif.records import CandidatePair, Judgment, Sample, content_key

__all__ = [
    "CandidateInput", "CandidateSet", "RankedCandidate", "Ranking", "BTFit", "group_candidates", "candidate_pairs",
    "comparison_matrix", "fit_bradley_terry", "components", "rank_set", "emit_rows", "EMIT_MODES",
]

EMIT_MODES = ("all", "best_worst", "adjacent")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandidateInput(_Record):
    """One input row: {id, prompt, responses: [...]} or one `Sample` of `rlaif generate` (grouped by prompt_id)."""

    id: str
    prompt: str
    responses: list[str] = Field(min_length=1)
    response_ids: list[str]
    group: str
    """Rows with the same group (and prompt text) are ranked together: the set id, or the sample's prompt_id."""

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "response_ids" in data:
            return data
        if "prompt_id" in data and "responses" not in data:
            s = Sample.model_validate(data)
            return {"id": f"{s.prompt_id}:{s.index}", "prompt": s.prompt, "responses": [s.response],
                    "response_ids": [f"{s.prompt_id}:{s.index}"], "group": s.prompt_id}
        responses = data.get("responses")
        ids = [f"{data.get('id')}:{i}" for i in range(len(responses))] if isinstance(responses, list) else []
        return {**data, "response_ids": ids, "group": data.get("id")}

    @field_validator("id", "prompt")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value


class CandidateSet(_Record):
    """The distinct, non-empty candidates for one prompt."""

    id: str
    prompt: str
    candidate_ids: list[str]
    responses: list[str]


def group_candidates(rows: list[CandidateInput]) -> tuple[list[CandidateSet], list[dict]]:
    """Candidate sets by (group, prompt); empty and repeated responses are dropped with a reason, and sets
    left with fewer than two candidates are skipped with a reason. Returns (sets, skipped)."""
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in rows:
        grouped.setdefault((row.group, row.prompt), []).extend(zip(row.response_ids, row.responses))
    clash = Counter(group for group, _ in grouped)
    sets, skipped = [], []
    for (group, prompt), members in grouped.items():
        set_id = group if clash[group] == 1 else f"{group}#{content_key(prompt)[:8]}"
        seen: dict[str, str] = {}
        kept: list[tuple[str, str]] = []
        for cid, text in members:
            if not text.strip():
                skipped.append({"set_id": set_id, "candidate_id": cid, "reason": "empty response"})
            elif text.strip() in seen:
                skipped.append({"set_id": set_id, "candidate_id": cid, "reason": f"identical to candidate {seen[text.strip()]}"})
            else:
                seen[text.strip()] = cid
                kept.append((cid, text))
        if len(kept) < 2:
            skipped.append({"set_id": set_id, "candidate_id": None, "reason": f"{len(kept)} distinct candidate(s); a ranking needs 2"})
            continue
        sets.append(CandidateSet(id=set_id, prompt=prompt, candidate_ids=[c for c, _ in kept], responses=[t for _, t in kept]))
    return sets, skipped


def candidate_pairs(cset: CandidateSet) -> list[CandidatePair]:
    """All K(K-1)/2 pairs of a set, i < j."""
    return [CandidatePair(id=f"{cset.id}:{i}-{j}", prompt=cset.prompt, response_1=cset.responses[i],
                          response_2=cset.responses[j], source={"set_id": cset.id, "candidates": [i, j]})
            for i, j in combinations(range(len(cset.responses)), 2)]


def judgment_outcome(judgment: Judgment) -> float | None:
    """P(response_1 better), 0.5 for a tie the judge declared, None for an unlabeled comparison."""
    if judgment.labeled:
        return judgment.p_first
    ps = [pv.p_first for pv in judgment.per_principle]
    if ps and None not in ps and not any(pv.error for pv in judgment.per_principle) and sum(ps) / len(ps) == 0.5:
        return 0.5
    return None


def comparison_matrix(k: int, outcomes: list[tuple[int, int, float | None]]) -> tuple[np.ndarray, dict]:
    """W[i, j] = fractional wins of i over j from (i, j, P(i better) or None); with counts of what was used."""
    wins = np.zeros((k, k))
    counts = Counter()
    for i, j, p in outcomes:
        if p is None:
            counts["unlabeled"] += 1
            continue
        counts["ties" if p == 0.5 else "decided"] += 1
        wins[i, j] += p
        wins[j, i] += 1.0 - p
    return wins, {"used": counts["decided"] + counts["ties"], "ties": counts["ties"], "unlabeled": counts["unlabeled"]}


class BTFit(_Record):
    strengths: list[float]
    """pi_i, on the scale where the prior's reference has strength 1."""
    iterations: int
    converged: bool


def _log_likelihood(theta: np.ndarray, wins: np.ndarray, prior: float) -> float:
    """Bradley-Terry log-likelihood of fractional wins, plus prior/2 virtual wins and losses against theta = 0."""
    diff = theta[:, None] - theta[None, :]
    ll = -(wins * np.logaddexp(0.0, -diff)).sum()
    return ll - prior / 2.0 * (np.logaddexp(0.0, -theta) + np.logaddexp(0.0, theta)).sum()


def fit_bradley_terry(wins: np.ndarray, prior: float = 1.0, tol: float = 1e-10, max_iter: int = 200) -> BTFit:
    """Maximise the Bradley-Terry likelihood of `wins` (wins[i, j] = fractional wins of i over j) over the
    log-strengths theta by Newton's method with step halving (a regularised logistic fit).

    Each candidate also has prior/2 virtual wins and prior/2 virtual losses against a reference with
    theta = 0 (strength 1): the objective is then strictly concave, every strength finite and the scale
    fixed. With prior = 0 it is the plain maximum-likelihood fit, centred at a geometric mean of 1; it
    does not exist for a candidate without a win or without a loss, which is refused.
    """
    k = wins.shape[0]
    if prior <= 0 and not (np.all(wins.sum(axis=1) > 0) and np.all(wins.sum(axis=0) > 0)):
        raise ValueError("without a prior a candidate with no wins (or no losses) has strength 0 (or infinity); use prior > 0")
    games = wins + wins.T
    theta = np.zeros(k)
    current = _log_likelihood(theta, wins, prior)
    for iteration in range(1, max_iter + 1):
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        q = 1.0 / (1.0 + np.exp(-theta))
        grad = wins.sum(axis=1) - (games * p).sum(axis=1) + prior / 2.0 - prior * q
        weights = games * p * p.T
        neg_hessian = np.diag(weights.sum(axis=1) + prior * q * (1.0 - q)) - weights
        step = np.linalg.lstsq(neg_hessian, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-12 and _log_likelihood(theta + t * step, wins, prior) < current - 1e-12 * abs(current):
            t /= 2.0
        theta = theta + t * step
        current = _log_likelihood(theta, wins, prior)
        if np.max(np.abs(t * step)) < tol:
            break
    else:
        iteration = max_iter + 1
    if prior <= 0:
        theta = theta - theta.mean()
    return BTFit(strengths=np.exp(theta).tolist(), iterations=min(iteration, max_iter), converged=iteration <= max_iter)


def components(wins: np.ndarray) -> list[list[int]]:
    """Connected parts of the comparison graph (an edge where a comparison was used)."""
    k, seen, parts = wins.shape[0], set(), []
    games = wins + wins.T
    for start in range(k):
        if start in seen:
            continue
        part, stack = [], [start]
        seen.add(start)
        while stack:
            node = stack.pop()
            part.append(node)
            for other in np.nonzero(games[node] > 0)[0].tolist():
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        parts.append(sorted(part))
    return parts


class RankedCandidate(_Record):
    index: int
    """Position in the input set."""
    id: str
    response: str
    strength: float
    log_strength: float
    soft_wins: float
    """Sum of P(this candidate better) over its comparisons (ties count 0.5)."""
    wins: int
    losses: int
    ties: int
    comparisons: int


class Ranking(_Record):
    """One prompt's candidates, strongest first, with how the order was reached."""

    set_id: str
    prompt: str
    candidates: list[RankedCandidate]
    judge: str
    model: str
    backend: str
    template: str
    template_version: str
    constitution_version: str
    principle_ids: list[str]
    """Every principle any of its comparisons was judged under."""
    comparisons_total: int
    comparisons_used: int
    ties: int
    unlabeled: int
    unlabeled_reasons: dict[str, int]
    connected: bool
    components: list[list[str]]
    prior: float
    iterations: int
    converged: bool
    judgment_keys: list[str]


def _candidate_stats(k: int, outcomes: list[tuple[int, int, float | None]]) -> list[Counter]:
    stats = [Counter() for _ in range(k)]
    for i, j, p in outcomes:
        if p is None:
            continue
        for me, q in ((i, p), (j, 1.0 - p)):
            stats[me]["comparisons"] += 1
            stats[me]["soft_wins"] += q
            stats[me]["wins" if q > 0.5 else "losses" if q < 0.5 else "ties"] += 1
    return stats


def _reason_kind(reason: str | None) -> str:
    """'helpfulness: order 12: prompt too long: 3000 tokens' -> 'prompt too long'."""
    text = re.sub(r"^[\w-]+: (order \d+: )?", "", reason or "unknown")
    return text.split(";")[0].split(":")[0].strip()


def rank_set(cset: CandidateSet, judgments: list[Judgment], prior: float = 1.0) -> Ranking:
    """Fit and order one set; `judgments` are aligned with `candidate_pairs(cset)`."""
    k = len(cset.responses)
    outcomes = [(p.source["candidates"][0], p.source["candidates"][1], judgment_outcome(j))
                for p, j in zip(candidate_pairs(cset), judgments)]
    wins, used = comparison_matrix(k, outcomes)
    fit = fit_bradley_terry(wins, prior)
    stats = _candidate_stats(k, outcomes)
    order = sorted(range(k), key=lambda i: (-fit.strengths[i], i))
    ranked = [RankedCandidate(index=i, id=cset.candidate_ids[i], response=cset.responses[i], strength=fit.strengths[i],
                              log_strength=math.log(fit.strengths[i]), soft_wins=stats[i]["soft_wins"],
                              wins=stats[i]["wins"], losses=stats[i]["losses"], ties=stats[i]["ties"],
                              comparisons=stats[i]["comparisons"]) for i in order]
    parts = components(wins)
    reasons = Counter(_reason_kind(j.reason) for (_, _, p), j in zip(outcomes, judgments) if p is None)
    first = judgments[0]
    principle_ids = sorted({pid for j in judgments for pid in j.principle_ids})
    return Ranking(
        set_id=cset.id, prompt=cset.prompt, candidates=ranked, judge=first.judge, model=first.model,
        backend=first.backend, template=first.template, template_version=first.template_version,
        constitution_version=first.constitution_version, principle_ids=principle_ids, comparisons_total=len(outcomes),
        comparisons_used=used["used"], ties=used["ties"], unlabeled=used["unlabeled"], unlabeled_reasons=dict(reasons),
        connected=len(parts) == 1, components=[[cset.candidate_ids[i] for i in part] for part in parts], prior=prior,
        iterations=fit.iterations, converged=fit.converged, judgment_keys=[j.key for j in judgments],
    )


def _emitted_pairs(ranking: Ranking, emit: str) -> list[tuple[RankedCandidate, RankedCandidate]]:
    c = ranking.candidates
    if emit == "all":
        return list(combinations(c, 2))
    if emit == "best_worst":
        return [(c[0], c[-1])]
    if emit == "adjacent":
        return list(zip(c, c[1:]))
    raise ValueError(f"emit must be one of {EMIT_MODES}, got {emit!r}")


def emit_rows(ranking: Ranking, emit: Literal["all", "best_worst", "adjacent"],
              judgments: dict[tuple[int, int], Judgment]) -> tuple[list[dict], int]:
    """Preference rows (chosen = the stronger candidate) from a ranking; pairs of equal strength give no row.

    `judgments` maps (i, j) with i < j (input positions) to the direct judgment, for its provenance.
    Returns (rows, pairs of equal strength). P(chosen better) is the Bradley-Terry probability pi_c / (pi_c + pi_r).
    """
    rows, ties = [], 0
    strengths = {c.index: c.strength for c in ranking.candidates}
    for better, worse in _emitted_pairs(ranking, emit):
        if math.isclose(better.strength, worse.strength, rel_tol=1e-9):  # equal up to the fit's float noise
            ties += 1
            continue
        direct = judgments.get((min(better.index, worse.index), max(better.index, worse.index)))
        outcome = judgment_outcome(direct) if direct else None
        p_direct = None if outcome is None else (outcome if better.index < worse.index else 1.0 - outcome)
        rows.append({
            "prompt": [{"role": "user", "content": ranking.prompt}],
            "chosen": [{"role": "assistant", "content": better.response}],
            "rejected": [{"role": "assistant", "content": worse.response}],
            "pair_id": f"{ranking.set_id}:{better.id}>{worse.id}", "source": "ranking", "judge": ranking.judge,
            "judge_model": ranking.model, "judge_backend": ranking.backend, "template": ranking.template,
            "template_version": ranking.template_version, "constitution_version": ranking.constitution_version,
            "principle_ids": direct.principle_ids if direct else ranking.principle_ids,
            "probability": better.strength / (better.strength + worse.strength),
            "orders_agree": direct.orders_agree if direct else None,
            "chosen_id": better.id, "rejected_id": worse.id, "chosen_score": better.log_strength,
            "rejected_score": worse.log_strength, "comparisons": ranking.comparisons_used,
            "provenance": json.dumps({"bt_strengths": {str(i): s for i, s in strengths.items()},
                                      "bt_prior": ranking.prior, "comparisons_used": ranking.comparisons_used,
                                      "comparisons_total": ranking.comparisons_total, "ties": ranking.ties,
                                      "connected": ranking.connected, "direct_p_chosen": p_direct,
                                      "rank": [c.id for c in ranking.candidates]}),
            "prompt_tokens": direct.prompt_tokens if direct else 0,
            "completion_tokens": direct.completion_tokens if direct else 0,
            "cost_usd": direct.cost_usd if direct else 0.0,
        })
    return rows, ties
