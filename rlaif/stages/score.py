"""`rlaif score`: each response scored alone (rlaif.judging.pointwise), resumably, then paired by score.

    ScoreItem -> PointwiseJudge -> ScoreRecord -> pairs_from_scores -> derived preference rows

`scores.jsonl` keeps one record per response and judge (an append log a rerun resumes from); every other
file is rebuilt from it on each run.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from rlaif.backends.pool import Backends
from rlaif.config.judge import JudgeSpec
from rlaif.judging.factory import make_judge
from rlaif.judging.pointwise import PointwiseJudge, ScoreItem, ScoreRecord
from rlaif.records import reason_kind
from rlaif.store.datasets import build_derived_dataset, save_dataset
from rlaif.store.manifest import write_manifest
from rlaif.store.rows import conversation
from rlaif.store.runfolder import RowError, RunFolder, resume_in_batches

__all__ = ["ScoreResult", "score_items", "pair_probability", "pairs_from_scores", "score_stage", "SCORES"]

SCORES = "scores.jsonl"


@dataclass
class ScoreResult:
    """Final records in input order (one per distinct response), and how many were new or reused."""

    records: list[ScoreRecord]
    items: list[ScoreItem]
    scored_now: int = 0
    reused: int = 0
    seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)


def score_items(items: list[ScoreItem], judge: PointwiseJudge, run: RunFolder, batch_size: int = 64,
                progress: bool = True) -> ScoreResult:
    """Score what is not scored yet in `run`, appending each finished batch to scores.jsonl.

    Scored records already there (same texts, same judge fingerprint) are reused; unscored ones are tried
    again, since their cause may have been transient. The latest record per key wins.
    """
    done = resume_in_batches(run, SCORES, ScoreRecord, items, judge.key, lambda r: r.scored, judge.score, batch_size,
                             progress, desc="scoring responses", unit="response")
    return ScoreResult(records=list(done.records.values()), items=list(done.items.values()), scored_now=done.done_now,
                       reused=done.reused, seconds=done.seconds, duplicates=done.duplicates)


def _overall(record: ScoreRecord) -> float:
    """The overall score of a scored record (an unscored one never makes a pair)."""
    if record.score is None:
        raise ValueError(f"response {record.item_id} is unscored ({record.reason}); it has no score to pair")
    return record.score


def pair_probability(score_chosen: float, score_rejected: float, scale: float = 1.0) -> float:
    """P(chosen better) = sigmoid((s_chosen - s_rejected) / scale): the overall score read as a Bradley-Terry
    log-strength in units of `scale` points (1 point -> 0.73, 2 -> 0.88, 4 -> 0.98 with scale 1)."""
    return 1.0 / (1.0 + math.exp(-(score_chosen - score_rejected) / scale))


def _score_summary(record: ScoreRecord) -> dict:
    return {"id": record.item_id, "score": record.score, "per_principle": {
        ps.principle_id: {"score": ps.score, "method": ps.method, "distribution": ps.distribution}
        for ps in record.per_principle}}


def _pair_row(better: tuple[ScoreItem, ScoreRecord], worse: tuple[ScoreItem, ScoreRecord], scale: float) -> dict:
    (ci, cr), (ri, rr) = better, worse
    return {
        **conversation(ci.prompt, chosen=ci.response, rejected=ri.response),
        "pair_id": f"{ci.id}>{ri.id}", "source": "pointwise", **cr.columns(),
        "probability": pair_probability(_overall(cr), _overall(rr), scale), "orders_agree": None,
        "chosen_id": ci.id, "rejected_id": ri.id, "chosen_score": cr.score, "rejected_score": rr.score,
        "comparisons": 0,
        "provenance": json.dumps({"mapping": f"sigmoid((chosen_score - rejected_score) / {scale})",
                                  "chosen": _score_summary(cr), "rejected": _score_summary(rr)}, ensure_ascii=False),
        # tokens and cost of the two scorings behind the row (a response in several rows is counted in each)
        "prompt_tokens": cr.prompt_tokens + rr.prompt_tokens,
        "completion_tokens": cr.completion_tokens + rr.completion_tokens, "cost_usd": cr.cost_usd + rr.cost_usd,
    }


def pairs_from_scores(items: list[ScoreItem], records: list[ScoreRecord], scale: float = 1.0) -> tuple[list[dict], list[dict]]:
    """Preference rows for every two scored responses to the same prompt; equal scores give no row (a tie).

    `items` and `records` are aligned (as in ScoreResult). Returns (rows, ties).
    """
    groups: dict[tuple[str | None, str], list[tuple[ScoreItem, ScoreRecord]]] = {}
    for item, record in zip(items, records):
        if record.scored:
            groups.setdefault((item.prompt_id, item.prompt), []).append((item, record))
    rows: list[dict] = []
    ties: list[dict] = []
    for members in groups.values():
        for a, b in combinations(members, 2):
            diff = _overall(a[1]) - _overall(b[1])
            if abs(diff) < 1e-12:
                ties.append({"ids": [a[0].id, b[0].id], "score": a[1].score, "prompt_id": a[0].prompt_id})
            else:
                rows.append(_pair_row(a, b, scale) if diff > 0 else _pair_row(b, a, scale))
    return rows, ties


def score_stage(items: list[ScoreItem], invalid_rows: list[RowError], judge_spec: str | Path | JudgeSpec, backends: Backends,
                run: RunFolder, batch_size: int = 64, progress: bool = True, extra: dict | None = None) -> dict[str, Any]:
    """Score the responses, derive pairs, write every output file; return the summary."""
    judge = make_judge(judge_spec, backends, "pointwise", "`rlaif score`")
    result = score_items(items, judge, run, batch_size=batch_size, progress=progress)
    unscored: list[dict[str, Any]] = [{"id": i.id, "prompt_id": i.prompt_id, "reason": r.reason, "prompt": i.prompt, "response": i.response,
                 "per_principle": {p.principle_id: p.error or p.score for p in r.per_principle}}
                for i, r in zip(result.items, result.records) if not r.scored]
    rows, ties = pairs_from_scores(result.items, result.records, judge.config.pointwise.pair_scale)
    save_dataset(run, "dataset", build_derived_dataset(rows), rows, jsonl="preferences.jsonl")
    run.write_jsonl("unscored.jsonl", unscored)
    run.write_jsonl("ties.jsonl", ties)
    run.write_jsonl("invalid_rows.jsonl", invalid_rows)
    scores = [r.score for r in result.records if r.scored and r.score is not None]
    methods = Counter(p.method for r in result.records for p in r.per_principle if p.method)
    summary = {
        "responses": len(result.items), "scored": len(scores), "unscored": len(unscored),
        "unscored_reasons": dict(Counter(reason_kind(u["reason"].split(": ", 1)[-1]) for u in unscored)),
        "invalid_rows": len(invalid_rows), "duplicate_responses": len(result.duplicates),
        "mean_score": sum(scores) / len(scores) if scores else None, "min_score": min(scores, default=None),
        "max_score": max(scores, default=None), "principle_scores_by_method": dict(methods),
        "preference_rows": len(rows), "ties": len(ties), "judged_now": result.scored_now,
        "reused_from_earlier_runs": result.reused, "score_seconds": round(result.seconds, 2),
        "responses_per_second": round(result.scored_now / result.seconds, 3) if result.scored_now and result.seconds else None,
        "cost_usd": sum(r.cost_usd for r in result.records), "run_dir": str(run.path),
    }
    write_manifest(run, judge.describe(), summary, {"scores": "scores.jsonl (append log; the latest record per key wins)",
                                    "unscored": "unscored.jsonl", "ties": "ties.jsonl", "dataset": "dataset/",
                                    "preferences": "preferences.jsonl", "invalid_rows": "invalid_rows.jsonl"},
                   pair_probability=f"sigmoid((chosen_score - rejected_score) / {judge.config.pointwise.pair_scale})",
                   **(extra or {}))
    return summary
