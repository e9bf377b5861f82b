"""`rlaif revise`: constitutional critique and revision into SFT and preference datasets."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlaif.cli.common import out_folder, positive_int, print_summary

__all__ = ["add_parsers"]

_FILES = ("sft", "sft.jsonl", "preferences", "preferences.jsonl", "critiques.jsonl", "items.jsonl", "skipped.jsonl",
          "manifest.json")


def cmd_revise(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from rlaif.config import load_revise_config
    from rlaif.errors import ConfigError
    from rlaif.stages.revise import run_revise

    config = load_revise_config(args.config)
    updates = {k: v for k, v in (("limit", args.limit), ("rounds", args.rounds), ("batch_size", args.batch_size)) if v is not None}
    if updates:  # validated like the YAML: --rounds 0 is refused
        try:
            config = type(config).model_validate({**config.model_dump(), **updates})
        except ValidationError as exc:
            raise ConfigError(f"invalid option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc
    summary = run_revise(config, args.out, samples=args.samples, progress=not args.quiet)
    examples = summary.pop("failure_examples")
    print_summary(summary, "revise", _FILES)
    for kind, example in examples.items():
        print(f"{'e.g. ' + kind:>28}: {example!r}")
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "revise", parents=[shared], help="constitutional critique and revision -> SFT and preference datasets",
        description="Constitutional AI's supervised stage. The policy answers each prompt (or the responses of --samples "
                    "are used); then, for each round, it critiques its current response under one principle of the "
                    "constitution (drawn per item and round with a seed) and rewrites the response to fix the critique. "
                    "A revision that errors, comes back empty or is cut off keeps the previous text, with the reason. "
                    "Writes an SFT dataset (prompt -> final revision), a preference dataset (final revision chosen over "
                    "the original), every critique, and a manifest. Rerunning into the same folder resumes from the last "
                    "finished round of each item.")
    p.add_argument("--config", default="revise", help="revise config name in configs/ or a path (default: %(default)s)")
    p.add_argument("--out", type=out_folder, default=Path("runs/revise"), help="run folder (default: %(default)s); rerunning resumes")
    p.add_argument("--limit", type=positive_int, help="use only the first N prompts or samples")
    p.add_argument("--rounds", type=int, help="critique -> revision rounds (overrides the config)")
    p.add_argument("--samples", help="JSONL of {id or prompt_id, prompt, response} to revise instead of generating originals")
    p.add_argument("--batch-size", type=positive_int, help="override the config's batch size")
    p.set_defaults(func=cmd_revise)
