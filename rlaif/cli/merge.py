"""`rlaif merge`: shard run folders -> one run folder."""

from __future__ import annotations

import argparse
import sys

from rlaif.cli.common import existing_folder, out_folder, print_summary

__all__ = ["add_parsers"]


def cmd_merge(args: argparse.Namespace) -> int:
    from rlaif.stages.merge import merge_runs

    summary = merge_runs(args.runs, args.out)
    print_summary(summary, "merge", ("dataset", "preferences.jsonl", "unlabeled.jsonl", "invalid_rows.jsonl",
                                     "judgments.jsonl", "manifest.json"))
    for run, rows in summary["rows_by_run"].items():
        if not rows:
            print(f"rlaif merge: warning: {run} added no rows: every pair id in it was already in an earlier run "
                  "(a copy of a run, or the same shard twice?)", file=sys.stderr)
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser("merge", parents=[shared], help="combine shard run folders into one dataset",
                       description="Combine the --out folders of `rlaif label --shard I/N` runs (or any label runs "
                                   "of one judge) into one run folder: one dataset (Arrow shards, "
                                   "datasets.load_from_disk), preferences/unlabeled/invalid rows and judgments, "
                                   "deduplicated by pair id and judgment key, and one manifest listing the shards "
                                   "and any that are missing. Runs labeled by different judges are refused.")
    p.add_argument("runs", nargs="+", type=existing_folder, metavar="RUN", help="label run folders to merge")
    p.add_argument("--out", type=out_folder, required=True, help="the merged run folder (a new folder)")
    p.set_defaults(func=cmd_merge)
