"""CLI command `rlaif revise`: constitutional critique and revision into SFT and preference datasets."""

from __future__ import annotations

from pathlib import Path

__all__ = ["add_parsers"]


def _print_summary(summary: dict) -> None:
    print("\n=== rlaif revise summary ===")
    for key in ("items", "rounds", "revisions", "revisions_accepted", "revisions_changed_text", "items_changed",
                "sft_rows", "preference_rows", "skipped", "original_failures", "invalid_rows", "rounds_run_now",
                "rounds_reused", "prompt_tokens", "completion_tokens", "total_seconds"):
        print(f"{key:>24}: {summary[key]}")
    for kind, count in sorted(summary["failures"].items(), key=lambda kv: -kv[1]):
        print(f"{'not revised because':>24}: {kind} ({count}), e.g. {summary['failure_examples'][kind]!r}")
    run_dir = Path(summary["run_dir"])
    for name in ("sft", "preferences"):
        print(f"{name:>24}: {run_dir / name}  (datasets.load_from_disk), {run_dir / name}.jsonl")
    for name in ("critiques.jsonl", "items.jsonl", "skipped.jsonl", "manifest.json"):
        print(f"{name:>24}: {run_dir / name}")


def cmd_revise(args) -> int:
    from pydantic import ValidationError

    from rlaif.errors import ConfigError
    from rlaif.revise import load_revise_config, run_revise

    config = load_revise_config(args.config)
    updates = {k: v for k, v in (("limit", args.limit), ("rounds", args.rounds), ("batch_size", args.batch_size)) if v is not None}
    if updates:  # validated like the YAML: --rounds 0 is refused
        try:
            config = type(config).model_validate({**config.model_dump(), **updates})
        except ValidationError as exc:
            raise ConfigError(f"invalid option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    _print_summary(run_revise(config, Path(args.out), samples=args.samples, progress=not args.quiet))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "revise", help="constitutional critique and revision -> SFT and preference datasets",
        description="Constitutional AI's supervised stage. The policy answers each prompt (or the responses of --samples "
                    "are used); then, for each round, it critiques its current response under one principle of the "
                    "constitution (drawn per item and round with a seed) and rewrites the response to fix the critique. "
                    "A revision that errors, comes back empty or is cut off keeps the previous text, with the reason. "
                    "Writes an SFT dataset (prompt -> final revision), a preference dataset (final revision chosen over "
                    "the original), every critique, and a manifest. Rerunning into the same folder resumes from the last "
                    "finished round of each item.")
    p.add_argument("--config", default="revise", help="revise config name in configs/ or a path (default: %(default)s)")
    p.add_argument("--out", default="runs/revise", help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--limit", type=int, help="use only the first N prompts or samples")
    p.add_argument("--rounds", type=int, help="critique -> revision rounds (overrides the config)")
    p.add_argument("--samples", help="JSONL of {id or prompt_id, prompt, response} to revise instead of generating originals")
    p.add_argument("--batch-size", type=int, help="override the config's batch size")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_revise)
