"""CLI commands of the other judging modes: `rlaif score` (pointwise) and `rlaif rank` (listwise ranking).

Both write a run folder that a rerun resumes: `score` keeps scores.jsonl (one record per response and judge),
`rank` keeps judgments.jsonl (one per pair of candidates); everything else is rebuilt from those on each run.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["add_parsers", "score_stage", "rank_stage"]


def _save_dataset(run, rows: list[dict]) -> None:
    from rlaif.dataset import build_derived_dataset

    # num_shards=1: with zero rows datasets writes no shard by default, and load_from_disk then fails
    build_derived_dataset(rows).save_to_disk(str(run.file("dataset")), num_shards=1)
    run.write_jsonl("preferences.jsonl", rows)


def _manifest(run, judge, counts: dict, files: dict, extra: dict) -> None:
    from rlaif.pipeline import _versions

    run.write_json("manifest.json", {
        "created_at": datetime.now(timezone.utc).isoformat(), "judge": judge.config.model_dump(mode="json"),
        "template": {"name": judge.template.name, "version": judge.template.version},
        "constitution": {"name": judge.constitution.name, "version": judge.constitution.version},
        "versions": _versions(), "counts": counts, "files": files, **extra,
    })


def score_stage(items, invalid_rows, judge_config, backend, run, batch_size: int = 64, progress: bool = True,
                extra: dict | None = None) -> dict:
    """Score the responses, derive pairs, write every output file; return the summary."""
    from rlaif.pipeline import reason_kind
    from rlaif.pointwise import PointwiseJudge, pairs_from_scores, score_items

    judge = PointwiseJudge(judge_config, backend)
    result = score_items(items, judge, run, batch_size=batch_size, progress=progress)
    unscored = [{"id": i.id, "prompt_id": i.prompt_id, "reason": r.reason, "prompt": i.prompt, "response": i.response,
                 "per_principle": {p.principle_id: p.error or p.score for p in r.per_principle}}
                for i, r in zip(result.items, result.records) if not r.scored]
    rows, ties = pairs_from_scores(result.items, result.records, judge_config.pointwise.pair_scale)
    _save_dataset(run, rows)
    run.write_jsonl("unscored.jsonl", unscored)
    run.write_jsonl("ties.jsonl", ties)
    run.write_jsonl("invalid_rows.jsonl", invalid_rows)
    scores = [r.score for r in result.records if r.scored]
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
    _manifest(run, judge, summary, {"scores": "scores.jsonl (append log; the latest record per key wins)",
                                    "unscored": "unscored.jsonl", "ties": "ties.jsonl", "dataset": "dataset/",
                                    "preferences": "preferences.jsonl", "invalid_rows": "invalid_rows.jsonl"},
              {"pair_probability": f"sigmoid((chosen_score - rejected_score) / {judge_config.pointwise.pair_scale})",
               **(extra or {})})
    return summary


def rank_stage(sets, skipped, invalid_rows, judge_config, backend, run, batch_size: int = 64, emit: str = "all",
               prior: float = 1.0, progress: bool = True, extra: dict | None = None) -> dict:
    """Judge every pair of every set, fit Bradley-Terry per set, emit rows, write every output file."""
    from rlaif.errors import ConfigError
    from rlaif.judge import PairwiseJudge
    from rlaif.label import label_pairs
    from rlaif.ranking import candidate_pairs, emit_rows, rank_set

    if judge_config.mode != "pairwise":
        raise ConfigError(f"judge {judge_config.name!r} has mode {judge_config.mode!r}; `rlaif rank` needs a pairwise judge")
    judge = PairwiseJudge(judge_config, backend)
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
    _save_dataset(run, rows)
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
    _manifest(run, judge, summary, {"judgments": "judgments.jsonl (append log; resumable)", "rankings": "rankings.jsonl",
                                    "dataset": "dataset/", "preferences": "preferences.jsonl",
                                    "skipped": "skipped.jsonl", "invalid_rows": "invalid_rows.jsonl"},
              {"bradley_terry": {"method": "maximum likelihood (Newton) on fractional wins", "prior_virtual_games": prior,
                                 "pair_probability": "pi_chosen / (pi_chosen + pi_rejected)"}, **(extra or {})})
    return summary


def _print_summary(summary: dict, title: str) -> None:
    print(f"\n=== rlaif {title} summary ===")
    for key, value in summary.items():
        if isinstance(value, dict):
            for name, count in sorted(value.items(), key=lambda kv: -kv[1]):
                print(f"{key.replace('_', ' '):>28}: {name} ({count})")
        elif value is not None:
            print(f"{key:>28}: {value:.3f}" if isinstance(value, float) else f"{key:>28}: {value}")
    run_dir = Path(summary["run_dir"])
    print(f"{'dataset':>28}: {run_dir / 'dataset'}  (datasets.load_from_disk)")


def _read_input(path: str, model):
    from rlaif.runfolder import read_rows

    rows, bad = read_rows(Path(path), model)
    for row in bad:
        print(f"skipping {row.file}:{row.line}: {row.error}", file=sys.stderr)
    return rows, bad


def cmd_score(args) -> int:
    from rlaif.config import load_judge_config
    from rlaif.pipeline import BackendPool
    from rlaif.pointwise import ScoreItem
    from rlaif.runfolder import RunFolder

    config = load_judge_config(args.judge)
    items, bad = _read_input(args.samples, ScoreItem)
    items = items[: args.limit] if args.limit else items
    run = RunFolder(args.out)
    with BackendPool() as pool:
        summary = score_stage(items, bad, config, pool.get(config.backend), run, args.batch_size, not args.quiet,
                              {"samples_file": str(args.samples), "limit": args.limit})
    _print_summary(summary, "score")
    return 0


def cmd_rank(args) -> int:
    from rlaif.config import load_judge_config
    from rlaif.pipeline import BackendPool
    from rlaif.ranking import CandidateInput, group_candidates
    from rlaif.runfolder import RunFolder

    config = load_judge_config(args.judge)
    rows, bad = _read_input(args.candidates, CandidateInput)
    sets, skipped = group_candidates(rows)
    sets = sets[: args.limit] if args.limit else sets
    run = RunFolder(args.out)
    with BackendPool() as pool:
        summary = rank_stage(sets, skipped, bad, config, pool.get(config.backend), run, args.batch_size, args.emit,
                             args.prior, not args.quiet, {"candidates_file": str(args.candidates), "limit": args.limit})
    _print_summary(summary, "rank")
    return 0


def _positive(text: str) -> float:
    import argparse

    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser("score", help="score responses one at a time (pointwise) and derive preference pairs",
                       description="Score each response alone under the judge's principles on its written rubric "
                                   "(expected score over the score digits' logprobs, or the digit in the reply), then "
                                   "pair the responses to each prompt: chosen = higher overall score; equal scores are "
                                   "ties with no row. Input JSONL: {id, prompt, response} rows or the samples.jsonl of "
                                   "`rlaif generate`. Malformed rows are listed in invalid_rows.jsonl. Rerunning into "
                                   "the same folder only scores what is not scored yet.")
    p.add_argument("--samples", required=True, help="JSONL of responses to score")
    p.add_argument("--judge", default="smollm2-pointwise", help="pointwise judge name in judges/ or a YAML path (default: %(default)s)")
    p.add_argument("--out", default="runs/score", help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--limit", type=int, help="score only the first N valid rows")
    p.add_argument("--batch-size", type=int, default=64, help="responses per judge batch (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("rank", help="rank K candidates per prompt from all pairwise comparisons (Bradley-Terry)",
                       description="Judge every pair of candidates of each prompt in both orders, fit a Bradley-Terry "
                                   "model per prompt (soft wins, a small prior keeps undefeated candidates finite), "
                                   "write rankings.jsonl and preference rows (chosen = stronger candidate). Input JSONL: "
                                   "{id, prompt, responses: [...]} rows or samples.jsonl rows (grouped by prompt_id). "
                                   "Rerunning into the same folder only judges pairs not labeled yet.")
    p.add_argument("--candidates", required=True, help="JSONL of candidate sets or samples")
    p.add_argument("--judge", default="smollm2-pairwise", help="pairwise judge name in judges/ or a YAML path (default: %(default)s)")
    p.add_argument("--out", default="runs/rank", help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--emit", choices=["all", "best_worst", "adjacent"], default="all",
                   help="rows per prompt: all pairs, best vs worst, or neighbours in the ranking (default: %(default)s)")
    p.add_argument("--prior", type=_positive, default=1.0,
                   help="virtual games (half won, half lost) of each candidate against a reference of strength 1 (default: %(default)s)")
    p.add_argument("--limit", type=int, help="rank only the first N prompts")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per judge batch (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_rank)
