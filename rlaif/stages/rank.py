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
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rlaif.backends.pool import Backends
from rlaif.config.judge import JudgeSpec
from rlaif.judging.factory import make_judge
from rlaif.records import CandidatePair, Judgment, Provenance, Record, Sample, content_key, non_blank, reason_kind
from rlaif.stages.bradley_terry import comparison_matrix, components, fit_bradley_terry
from rlaif.stages.label import label_pairs
from rlaif.store.datasets import build_derived_dataset, save_dataset
from rlaif.store.manifest import write_manifest
from rlaif.store.rows import conversation
from rlaif.store.runfolder import RowError, RunFolder

__all__ = [
    "CandidateInput", "CandidateSet", "RankedCandidate", "Ranking", "group_candidates", "candidate_pairs", "rank_set",
    "emit_rows", "rank_stage", "EMIT_MODES",
]

EMIT_MODES = ("all", "best_worst", "adjacent")


class CandidateInput(Record):
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

    _check_texts = field_validator("id", "prompt")(non_blank)


class CandidateSet(Record):
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
    sets: list[CandidateSet] = []
    skipped: list[dict[str, Any]] = []
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
            skipped.append({"set_id": set_id, "candidate_id": None,
                            "reason": f"{len(kept)} distinct candidate(s); a ranking needs 2"})
            continue
        sets.append(CandidateSet(id=set_id, prompt=prompt, candidate_ids=[c for c, _ in kept], responses=[t for _, t in kept]))
    return sets, skipped


def candidate_pairs(cset: CandidateSet) -> list[CandidatePair]:
    """All K(K-1)/2 pairs of a set, i < j."""
    return [CandidatePair(id=f"{cset.id}:{i}-{j}", prompt=cset.prompt, response_1=cset.responses[i],
                          response_2=cset.responses[j], source={"set_id": cset.id, "candidates": [i, j]})
            for i, j in combinations(range(len(cset.responses)), 2)]


class RankedCandidate(Record):
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


class Ranking(Provenance):
    """One prompt's candidates, strongest first, with how the order was reached (`principle_ids`: every
    principle any of its comparisons was judged under)."""

    set_id: str
    prompt: str
    candidates: list[RankedCandidate]
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


def _candidate_stats(k: int, outcomes: list[tuple[int, int, float | None]]) -> list[dict[str, float]]:
    stats: list[dict[str, float]] = [defaultdict(float) for _ in range(k)]
    for i, j, p in outcomes:
        if p is None:
            continue
        for me, q in ((i, p), (j, 1.0 - p)):
            stats[me]["comparisons"] += 1
            stats[me]["soft_wins"] += q
            stats[me]["wins" if q > 0.5 else "losses" if q < 0.5 else "ties"] += 1
    return stats


def rank_set(cset: CandidateSet, judgments: list[Judgment], prior: float = 1.0) -> Ranking:
    """Fit and order one set; `judgments` are aligned with `candidate_pairs(cset)`."""
    k = len(cset.responses)
    outcomes = [(p.source["candidates"][0], p.source["candidates"][1], j.outcome)
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
    reasons = Counter(reason_kind(j.reason) for (_, _, p), j in zip(outcomes, judgments) if p is None)
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
        outcome = direct.outcome if direct else None
        p_direct = None if outcome is None else (outcome if better.index < worse.index else 1.0 - outcome)
        rows.append({
            **conversation(ranking.prompt, chosen=better.response, rejected=worse.response),
            "pair_id": f"{ranking.set_id}:{better.id}>{worse.id}", "source": "ranking",
            **ranking.columns(), "principle_ids": direct.principle_ids if direct else ranking.principle_ids,
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


def rank_stage(sets: list[CandidateSet], skipped: list[dict], invalid_rows: list[RowError],
               judge_spec: str | Path | JudgeSpec, backends: Backends, run: RunFolder, batch_size: int = 64,
               emit: Literal["all", "best_worst", "adjacent"] = "all", prior: float = 1.0, progress: bool = True,
               extra: dict | None = None) -> dict[str, Any]:
    """Judge every pair of every set, fit Bradley-Terry per set, emit rows, write every output file."""
    judge = make_judge(judge_spec, backends, "pairwise", "`rlaif rank`")
    pairs_by_set = [candidate_pairs(s) for s in sets]
    started = time.perf_counter()
    result = label_pairs([p for ps in pairs_by_set for p in ps], judge, run, batch_size=batch_size, progress=progress)
    by_key = {j.key: j for j in result.judgments}
    rankings, rows, tied_rows = [], [], 0
    for cset, pairs in zip(sets, pairs_by_set):
        judgments = [by_key[judge.key(p)] for p in pairs]
        ranking = rank_set(cset, judgments, prior)
        direct = {tuple(p.source["candidates"]): j for p, j in zip(pairs, judgments)}
        emitted, ties = emit_rows(ranking, emit, direct)
        rankings.append(ranking)
        rows.extend(emitted)
        tied_rows += ties
    save_dataset(run, "dataset", build_derived_dataset(rows), rows, jsonl="preferences.jsonl")
    run.write_jsonl("rankings.jsonl", rankings)
    run.write_jsonl("skipped.jsonl", skipped)
    run.write_jsonl("invalid_rows.jsonl", invalid_rows)
    summary = {
        "prompts": len(sets), "candidates": sum(len(s.responses) for s in sets), "comparisons": len(result.judgments),
        "comparisons_used": sum(r.comparisons_used for r in rankings), "ties": sum(r.ties for r in rankings),
        "unlabeled": sum(r.unlabeled for r in rankings), "disconnected_prompts": sum(not r.connected for r in rankings),
        "skipped": len(skipped), "invalid_rows": len(invalid_rows), "emit": emit, "preference_rows": len(rows),
        "equal_strength_pairs": tied_rows, "judged_now": result.judged_now, "reused_from_earlier_runs": result.reused,
        "rank_seconds": round(time.perf_counter() - started, 2),
        "cost_usd": sum(j.cost_usd for j in result.judgments), "run_dir": str(run.path),
    }
    write_manifest(run, judge.describe(), summary, {"judgments": "judgments.jsonl (append log; resumable)", "rankings": "rankings.jsonl",
                                    "dataset": "dataset/", "preferences": "preferences.jsonl",
                                    "skipped": "skipped.jsonl", "invalid_rows": "invalid_rows.jsonl"},
                   bradley_terry={"method": "maximum likelihood (Newton) on fractional wins", "prior_virtual_games": prior,
                                  "pair_probability": "pi_chosen / (pi_chosen + pi_rejected)"}, **(extra or {}))
    return summary
