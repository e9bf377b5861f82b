"""`rlaif <command>`: the command line, the top layer. argparse lives only in this folder; every command
module adds its subcommands and calls the layers below. Heavy imports (torch, vLLM, datasets) stay inside
the commands, so `--help` is instant."""

from __future__ import annotations

from rlaif.cli.main import build_parser, main

__all__ = ["main", "build_parser"]
