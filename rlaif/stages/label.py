"""The labeling stage: candidate pairs in, judgments out, resumable; then the dataset and the manifest.

Finished labels are appended to `judgments.jsonl` batch by batch. On a rerun every pair whose label is
already there (same texts, same judge, template and constitution versions) is skipped, so nothing is
redone or written twice (rlaif.store.runfolder.resume_in_batches); unlabeled pairs are tried again, since
their cause may have been transient, except ties: the same judge would tie again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.backends.pool import Backends
from rlaif.config.judge import JudgeSpec
from rlaif.judging.base import PairJudge
from rlaif.judging.factory import make_judge
from rlaif.records import CandidatePair, Judgment, reason_kind
from rlaif.store.datasets import build_dataset, save_dataset
from rlaif.store.manifest import write_manifest
from rlaif.store.rows import preference_row, unlabeled_row
from rlaif.store.runfolder import RowError, RunFolder, resume_in_batches

__all__ = ["LabelResult", "label_pairs", "label_stage", "latest_judgments", "JUDGMENTS"]

JUDGMENTS = "judgments.jsonl"


@dataclass
class LabelResult:
    """What the stage did: final judgments in input order, and how many were new or reused."""

    judgments: list[Judgment]
    judged_now: int = 0
    reused: int = 0
    seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)


def latest_judgments(run: RunFolder) -> dict[str, Judgment]:
    """The last judgment recorded for each key (a rerun may have re-tried an unlabeled pair)."""
    return {j.key: j for j in run.read(JUDGMENTS, Judgment)}


def label_pairs(pairs: list[CandidatePair], judge: PairJudge, run: RunFolder, batch_size: int = 64,
                progress: bool = True) -> LabelResult:
    """Judge what is not judged yet in `run`; returns every pair's latest judgment."""
    done = resume_in_batches(run, JUDGMENTS, Judgment, pairs, judge.key, lambda j: j.final, judge.judge, batch_size,
                             progress, desc="judging pairs", unit="pair")
    return LabelResult(judgments=list(done.records.values()), judged_now=done.done_now, reused=done.reused,
                       seconds=done.seconds, duplicates=done.duplicates)


def label_stage(
    pairs: list[CandidatePair], judge: str | Path | JudgeSpec, backends: Backends, run: RunFolder,
    batch_size: int = 64, invalid_rows: Sequence[RowError] = (), skipped: Sequence[dict] = (),
    extra_manifest: dict | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Judge the pairs, write the dataset, the unlabeled list and the manifest; return the summary."""
    pair_judge = make_judge(judge, backends, "pairwise", "labeling pairs")
    before = backends.stats()
    result = label_pairs(pairs, pair_judge, run, batch_size=batch_size, progress=progress)
    stats = backends.stats().since(before).model_dump()
    return _write_outputs(run, pairs, pair_judge, result, list(invalid_rows), list(skipped),
                          {**(extra_manifest or {}), "backend_stats": stats})


def _write_outputs(run: RunFolder, pairs: list[CandidatePair], judge: PairJudge, result: LabelResult,
                   invalid_rows: list[RowError], skipped: list[dict], extra: dict) -> dict[str, Any]:
    by_key = {judge.key(p): p for p in pairs}
    rows: list[dict] = []
    unlabeled: list[dict] = list(skipped)
    for j in result.judgments:
        pair = by_key[j.key]
        (rows if j.labeled else unlabeled).append(preference_row(pair, j) if j.labeled else unlabeled_row(pair, j))
    save_dataset(run, "dataset", build_dataset(rows), rows, jsonl="preferences.jsonl")
    run.write_jsonl("unlabeled.jsonl", unlabeled)
    run.write_jsonl("invalid_rows.jsonl", invalid_rows)
    agreements = [r["orders_agree"] for r in rows if r["orders_agree"] is not None]
    summary = {
        "pairs": len(pairs), "labeled": len(rows), "unlabeled": len(unlabeled),
        "unlabeled_reasons": dict(Counter(reason_kind(u["reason"]) for u in unlabeled)),
        "invalid_rows": len(invalid_rows), "duplicate_pairs": len(result.duplicates),
        "judged_now": result.judged_now, "reused_from_earlier_runs": result.reused,
        "orders_agree_rate": sum(agreements) / len(agreements) if agreements else None,
        "label_seconds": round(result.seconds, 2),
        "labels_per_second": round(result.judged_now / result.seconds, 3) if result.judged_now and result.seconds else None,
        "cost_usd": sum(r["cost_usd"] for r in rows), "backend_stats": extra["backend_stats"], "run_dir": str(run.path),
    }
    write_manifest(run, judge.describe(), {k: v for k, v in summary.items() if k != "backend_stats"},
                   {"dataset": "dataset/", "preferences": "preferences.jsonl", "unlabeled": "unlabeled.jsonl",
                    "invalid_rows": "invalid_rows.jsonl", "judgments": "judgments.jsonl"}, **extra)
    return summary
