"""The labeling commands: `rlaif generate`, `label`, `run` (pairwise), `score` (pointwise), `rank` (listwise)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from rlaif.cli.common import out_folder, positive_float, positive_int, print_summary, read_input, share, stream_input

__all__ = ["add_parsers"]

_LABEL_FILES = ("dataset", "preferences.jsonl", "unlabeled.jsonl", "invalid_rows.jsonl", "manifest.json")
RAY_STALL_S = 600.0
"""`--ray-stall-timeout` by default: a CPU engine starts in ~40 s; a big model on a GPU node in a few minutes."""


def _run_config(args: argparse.Namespace):
    from rlaif.config import load_run_config

    config = load_run_config(args.config)
    updates = {k: v for k, v in (("limit", args.limit), ("batch_size", args.batch_size)) if v}
    return config.model_copy(update=updates) if updates else config


def cmd_generate(args: argparse.Namespace) -> int:
    from rlaif.backends import BackendPool
    from rlaif.stages.generate import PAIRS, generate_stage, load_prompts, make_pairs
    from rlaif.store import RunFolder

    config = _run_config(args)
    run = RunFolder(args.out)
    prompts, bad = load_prompts(config)
    run.write_jsonl("invalid_prompts.jsonl", bad)
    with BackendPool() as pool:
        samples = generate_stage(prompts, pool.get(config.policy.backend), config, run, not args.quiet)
    pairs, skipped = make_pairs(samples)
    run.write_jsonl(PAIRS, pairs)
    print(f"{len(samples)} samples for {len(prompts)} prompts ({len(bad)} invalid prompt rows); "
          f"{len(pairs)} candidate pairs ({len(skipped)} skipped) -> {run.file(PAIRS)}")
    return 0


def shard_spec(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N): shard I (0-based) of N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"shard {text}: N must be >= 1 and I in 0..N-1")
    return index, count


def cmd_label(args: argparse.Namespace) -> int:
    from rlaif.backends import BackendPool
    from rlaif.config import load_judge_spec
    from rlaif.errors import ConfigError
    from rlaif.records import CandidatePair
    from rlaif.stages.label import LabelOptions, label_stage
    from rlaif.store import RunFolder
    from rlaif.store.inputs import FORMATS

    ray_options = {"--ray-address": args.ray_address, "--ray-actors": args.ray_actors,
                   "--ray-gpus-per-actor": args.ray_gpus_per_actor, "--ray-stall-timeout": args.ray_stall_timeout}
    if args.runner == "local" and any(v is not None for v in ray_options.values()):
        given = ", ".join(name for name, v in ray_options.items() if v is not None)
        raise ConfigError(f"{given} only apply to --runner ray; add --runner ray or leave them out")
    judge = load_judge_spec(args.judge)
    pairs, total = stream_input(args.pairs, CandidatePair, f"rows {{id, prompt, response_1, response_2}} in {FORMATS}")
    if args.runner == "ray":
        return _label_on_ray(args, judge, pairs, total)
    with BackendPool() as pool:
        options = LabelOptions(keep_prompts=args.keep_prompts, shard=args.shard, total=total, source=str(args.pairs),
                               extra_manifest={"pairs_file": str(args.pairs)})
        summary = label_stage(pairs, judge, pool, RunFolder(args.out), args.batch_size, not args.quiet, options)
    print_summary(summary, "label", _LABEL_FILES)
    return 0


def _label_on_ray(args: argparse.Namespace, judge, pairs, total: int) -> int:
    """`rlaif label --runner ray`: judge on a Ray cluster (rlaif.stages.ray_label), write the outputs here."""
    from importlib.util import find_spec

    from rlaif.errors import ConfigError
    from rlaif.store import RunFolder

    if find_spec("ray") is None or find_spec("ray.data") is None:
        raise ConfigError("--runner ray needs Ray Data: pip install 'rlaif[ray]' (the same Ray version as the cluster)")
    from rlaif.stages.ray_label import ray_label_stage

    with _ray_logs(args.verbose):
        summary = ray_label_stage(args.pairs, judge, RunFolder(args.out), args.batch_size, actors=args.ray_actors or 1,
                                  gpus_per_actor=args.ray_gpus_per_actor or 0, address=args.ray_address,
                                  keep_prompts=args.keep_prompts, shard=args.shard, progress=not args.quiet,
                                  extra_manifest={"pairs_file": str(args.pairs)}, pairs=pairs, total=total,
                                  ray_init_args={"log_to_driver": args.verbose},
                                  stall_s=args.ray_stall_timeout or RAY_STALL_S)
    print_summary(summary, "label", _LABEL_FILES)
    return 0


@contextlib.contextmanager
def _ray_logs(verbose: bool) -> Iterator[None]:
    """Ray's and Ray Data's INFO lines go where the engines' logs go (rlaif.log), not to the terminal, unless
    --verbose: their console handlers are taken off and the records passed up to the root logger meanwhile."""
    import logging

    import ray.data  # noqa: F401  (both loggers are set up on import)

    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    saved = [(log, log.handlers[:], log.propagate, log.level) for log in loggers]
    if not verbose:
        for log in loggers:
            log.handlers = [h for h in log.handlers if not (isinstance(h, logging.StreamHandler)
                                                            and not isinstance(h, logging.FileHandler))]
            log.propagate = True
            log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for log, handlers, propagate, level in saved:
            log.handlers, log.propagate = handlers, propagate
            log.setLevel(level)


def gpus(text: str) -> float:
    """A GPU count per actor: 0 or more (fractions share a GPU)."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from rlaif.stages.run import run_pipeline

    summary = run_pipeline(_run_config(args), args.out, progress=not args.quiet)
    print_summary(summary, "run", _LABEL_FILES)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rlaif.backends import BackendPool
    from rlaif.config import load_judge_spec
    from rlaif.judging import ScoreItem
    from rlaif.stages.score import score_stage
    from rlaif.store import RunFolder

    judge = load_judge_spec(args.judge)
    items, bad = read_input(args.samples, ScoreItem, "{id, prompt, response} rows or the samples.jsonl of `rlaif generate`")
    items = items[: args.limit] if args.limit else items
    with BackendPool() as pool:
        summary = score_stage(items, bad, judge, pool, RunFolder(args.out), args.batch_size, not args.quiet,
                              {"samples_file": str(args.samples), "limit": args.limit})
    print_summary(summary, "score", ("dataset", "scores.jsonl", "unscored.jsonl", "manifest.json"))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from rlaif.backends import BackendPool
    from rlaif.config import load_judge_spec
    from rlaif.stages.rank import CandidateInput, group_candidates, rank_stage
    from rlaif.store import RunFolder

    judge = load_judge_spec(args.judge)
    rows, bad = read_input(args.candidates, CandidateInput,
                           "{id, prompt, responses: [...]} rows or the samples.jsonl of `rlaif generate`")
    sets, skipped = group_candidates(rows)
    sets = sets[: args.limit] if args.limit else sets
    with BackendPool() as pool:
        summary = rank_stage(sets, skipped, bad, judge, pool, RunFolder(args.out), args.batch_size, args.emit,
                             args.prior, not args.quiet, {"candidates_file": str(args.candidates), "limit": args.limit})
    print_summary(summary, "rank", ("dataset", "rankings.jsonl", "manifest.json"))
    return 0


def _run_options(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--config", default="main", help="run config name in configs/ or a path (default: %(default)s)")
    p.add_argument("--out", type=out_folder, default=Path(out_default), help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--limit", type=positive_int, help="use only the first N prompts")
    p.add_argument("--batch-size", type=positive_int, help="override the config's batch size")


def _judge_options(p: argparse.ArgumentParser, judge: str, out: str, batch: int, what: str) -> None:
    p.add_argument("--judge", default=judge, help=f"{what} name in judges/ or a YAML path (default: %(default)s)")
    p.add_argument("--out", type=out_folder, default=Path(out), help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--batch-size", type=positive_int, default=batch, help="items per judge batch (default: %(default)s)")


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[shared], help="sample N policy responses per prompt and build candidate pairs",
                       description="Sample responses from the policy model for each prompt of the run config, "
                                   "write samples.jsonl and pairs.jsonl to the run folder.")
    _run_options(p, "runs/generate")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("label", parents=[shared], help="judge candidate pairs into a preference dataset",
                       description="Judge each pair in both orders and write a TRL prompt/chosen/rejected dataset with "
                                   "provenance. Input rows {id, prompt, response_1, response_2}, read as a stream from "
                                   "JSONL, Parquet or a saved dataset folder; memory stays flat whatever its size. "
                                   "Malformed rows are listed in invalid_rows.jsonl; the rest are labeled. A pair that "
                                   "repeats another's texts is judged once and each id keeps its row. Rerunning into the "
                                   "same folder only judges what is not labeled yet (also after kill -9).")
    p.add_argument("--pairs", required=True,
                   help="candidate pairs: a .jsonl file, a .parquet file or folder of them, or a save_to_disk folder")
    _judge_options(p, "smollm2-pairwise", "runs/label", 64,
                   "judge (a single pairwise judge, a reasoning judge, or an ensemble such as smollm2-ensemble)")
    p.add_argument("--shard", type=shard_spec, metavar="I/N",
                   help="label only shard I of N (0-based, by content key): run the N shards anywhere, then "
                        "`rlaif merge` their folders")
    p.add_argument("--keep-prompts", type=share, default=0.01, metavar="SHARE",
                   help="share of labeled pairs whose rendered judge prompts are kept in judgments.jsonl (unlabeled "
                        "pairs always keep them; default: %(default)s)")
    p.add_argument("--runner", choices=["local", "ray"], default="local",
                   help="local: judge in this process (default); ray: judge on a Ray cluster with Ray Data, one engine "
                        "per actor, then write the same outputs here (needs `pip install 'rlaif[ray]'`; see "
                        "docs/scaling.md)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --runner ray: the Ray cluster, e.g. `auto` on a node of a running cluster (default: "
                        "$RAY_ADDRESS if set, else a local Ray started for this command)")
    p.add_argument("--ray-actors", type=positive_int, metavar="N",
                   help="with --runner ray: judge actors, each opening the judge's engine once (default: 1; cut to "
                        "what the cluster's CPUs and GPUs can hold, keeping one CPU to read the pairs)")
    p.add_argument("--ray-gpus-per-actor", type=gpus, metavar="G",
                   help="with --runner ray: GPUs each actor reserves, e.g. 1 for a vLLM judge on a GPU cluster "
                        "(default: 0, for CPU clusters and API backends)")
    p.add_argument("--ray-stall-timeout", type=positive_float, metavar="SECONDS",
                   help=f"with --runner ray: stop with an error when no judgment comes back from the cluster for this "
                        f"long (default: {RAY_STALL_S:g}; engine start and the first batch count)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("run", parents=[shared], help="the main job: prompts -> policy samples -> AI labels -> preference dataset",
                       description="Generate samples for the run config's prompts, judge every pair in both orders, "
                                   "write the dataset and print a summary. Rerunning into the same folder resumes.")
    _run_options(p, "runs/main")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", parents=[shared], help="score responses one at a time (pointwise) and derive preference pairs",
                       description="Score each response alone under the judge's principles on its written rubric "
                                   "(expected score over the score digits' logprobs, or the digit in the reply), then "
                                   "pair the responses to each prompt: chosen = higher overall score; equal scores are "
                                   "ties with no row. Input JSONL: {id, prompt, response} rows or the samples.jsonl of "
                                   "`rlaif generate`. Malformed rows are listed in invalid_rows.jsonl. Rerunning into "
                                   "the same folder only scores what is not scored yet.")
    p.add_argument("--samples", required=True, help="JSONL of responses to score")
    _judge_options(p, "smollm2-pointwise", "runs/score", 64, "pointwise judge")
    p.add_argument("--limit", type=positive_int, help="score only the first N valid rows")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("rank", parents=[shared], help="rank K candidates per prompt from all pairwise comparisons (Bradley-Terry)",
                       description="Judge every pair of candidates of each prompt in both orders, fit a Bradley-Terry "
                                   "model per prompt (soft wins, a small prior keeps undefeated candidates finite), "
                                   "write rankings.jsonl and preference rows (chosen = stronger candidate). Input JSONL: "
                                   "{id, prompt, responses: [...]} rows or samples.jsonl rows (grouped by prompt_id). "
                                   "Rerunning into the same folder only judges pairs not labeled yet.")
    p.add_argument("--candidates", required=True, help="JSONL of candidate sets or samples")
    _judge_options(p, "smollm2-pairwise", "runs/rank", 64, "pairwise judge (or ensemble)")
    p.add_argument("--emit", choices=["all", "best_worst", "adjacent"], default="all",
                   help="rows per prompt: all pairs, best vs worst, or neighbours in the ranking (default: %(default)s)")
    p.add_argument("--prior", type=positive_float, default=1.0,
                   help="virtual games (half won, half lost) of each candidate against a reference of strength 1 (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, help="rank only the first N prompts")
    p.set_defaults(func=cmd_rank)
