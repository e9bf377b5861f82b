"""`rlaif <command>`: the parser and the one place errors become exit codes.

A user's mistake (a bad option, a missing file, an input with no usable row, an invalid config) ends in
one line saying what to do, and exit status 2; `--verbose` also prints the traceback. A command with a run
folder sends the engines' log lines to `rlaif.log` there (rlaif.cli.logs).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from rlaif.cli import audit, catalogue, labeling, merge, revise, serve, train
from rlaif.cli.common import Parser, common_options

__all__ = ["main", "build_parser"]

_EPILOG = ("Configs are YAML: judges in judges/, run configs in configs/, prompts and constitutions in prompts/. "
           "Every command takes --quiet (no progress bars) and --verbose (engine logs and tracebacks on the terminal).")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rlaif", description="Reinforcement learning from AI feedback: constitutional LLM judges -> preference datasets.",
        epilog=_EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>", parser_class=Parser)
    shared = common_options()
    for module in (catalogue, labeling, merge, revise, audit, train, serve):
        module.add_parsers(sub, shared)
    return parser


def _log_folder(args: argparse.Namespace) -> Path | None:
    """The run folder whose rlaif.log gets the engines' log lines (commands that write one)."""
    out = getattr(args, "out", None)
    return out if isinstance(out, Path) else None


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from rlaif.cli.logs import engine_logs
    from rlaif.errors import RlaifError

    try:
        with engine_logs(_log_folder(args), args.verbose):
            return int(args.func(args))
    except RlaifError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"rlaif {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlaif {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
