"""`rlaif run`, the main job: prompts -> policy samples -> candidate pairs -> AI labels -> dataset, in one run
folder. Each stage reads what earlier runs left in the folder and only does what is missing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlaif.backends.pool import BackendPool
from rlaif.config.judge import load_judge_spec
from rlaif.config.run import RunConfig
from rlaif.stages.generate import PAIRS, generate_stage, load_prompts, make_pairs
from rlaif.stages.label import LabelOptions, label_stage
from rlaif.store.runfolder import RunFolder

__all__ = ["run_pipeline"]


def run_pipeline(config: RunConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """prompts -> samples -> pairs -> labels -> dataset, in one run folder; returns the summary."""
    run = RunFolder(out)
    started = time.perf_counter()
    judge = load_judge_spec(config.judge)
    prompts, bad_prompts = load_prompts(config)
    with BackendPool() as pool:
        samples = generate_stage(prompts, pool.get(config.policy.backend), config, run, progress)
        pairs, skipped = make_pairs(samples)
        run.write_jsonl(PAIRS, pairs)
        options = LabelOptions(invalid_rows=bad_prompts, skipped=skipped, extra_manifest={
            "run_config": config.model_dump(mode="json"), "prompts": len(prompts), "samples": len(samples)})
        summary = label_stage(pairs, judge, pool, run, config.batch_size, progress, options)
    summary["prompts"], summary["samples"] = len(prompts), len(samples)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    return summary
