"""`rlaif merge`: shard run folders (from `rlaif label --shard I/N`, run anywhere) -> one run folder.

The shards' datasets, unlabeled and invalid rows and judgments are streamed into one folder, deduplicated
(a pair id keeps one row, and a labeled row wins over an unlabeled one; a judgment key keeps its final
judgment; `duplicate_rows_dropped` counts rows whose id an earlier run already had: the same pair merged
twice, or an id the input used twice for different texts, which no single shard can see), with one
manifest that lists the shards and says which of 0..N-1 are missing. Runs made by different judges (config,
template or constitution versions) are refused: their labels do not mix.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic_core import from_json

from rlaif.errors import InputError
from rlaif.records import reason_kind
from rlaif.stages.label import JUDGMENTS, LABEL_FILES
from rlaif.store.datasets import DatasetWriter, pairwise_features, saved_batches, saved_data_files
from rlaif.store.index import JudgmentIndex, SeenSet, is_final
from rlaif.store.manifest import write_manifest
from rlaif.store.runfolder import RunFolder

__all__ = ["merge_runs", "check_runs", "merge_rows", "merge_judgments", "write_merged_manifest"]

_MADE_BY = ("judge", "template", "constitution")


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file() or not (folder / "dataset").is_dir():
        raise InputError(f"{folder} is not a finished `rlaif label` run folder (no manifest.json or dataset/): "
                         "merge the --out folders of `rlaif label --shard I/N` runs that completed")
    return json.loads(path.read_text(encoding="utf-8"))


def _lines(path: Path) -> Iterator[str]:
    """The non-blank lines of a JSONL file, each ending in a newline (a killed run may have left the last without)."""
    if path.is_file():
        with path.open(encoding="utf-8") as fh:
            yield from (line if line.endswith("\n") else line + "\n" for line in fh if line.strip())


def _dataset_parts(folder: Path) -> Iterator[tuple[Any, list[str]]]:
    """(Arrow table, its preferences.jsonl lines) a record batch at a time: the two files hold the same rows in the
    same order, so they are copied together without decoding the rows."""
    import pyarrow as pa

    lines = _lines(folder / "preferences.jsonl")
    for batch in saved_batches(folder / "dataset"):
        part = list(islice(lines, batch.num_rows))
        if len(part) != batch.num_rows:
            raise _disagree(folder, "fewer")
        yield pa.Table.from_batches([batch]), part
    if next(lines, None) is not None:
        raise _disagree(folder, "more")


def _disagree(folder: Path, how: str) -> InputError:
    return InputError(f"{folder / 'preferences.jsonl'} has {how} rows than {folder / 'dataset'}: the run folder was "
                      "changed after labeling; label that shard again")


def merge_runs(folders: list[Path], out: Path) -> dict[str, Any]:
    """Merge label run folders into `out`; returns the summary."""
    folders, manifests = check_runs(folders, out)
    rows = merge_rows(folders, out)
    return write_merged_manifest(folders, manifests, out, {**rows, "judgments": merge_judgments(folders, out)})


def check_runs(folders: list[Path], out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The folders (as paths) and their manifests, once checked that they merge: finished label runs of one judge,
    none of them `out`."""
    if not folders:
        raise InputError("give at least one run folder to merge")
    folders = [Path(f) for f in folders]
    if Path(out).resolve() in {f.resolve() for f in folders}:
        raise InputError(f"--out {out} is one of the folders being merged: write the merge to a new folder")
    first_named: dict[Path, Path] = {}
    for folder in folders:
        earlier = first_named.setdefault(folder.resolve(), folder)
        if earlier is not folder:
            also = f" (also as {earlier})" if str(earlier) != str(folder) else ""
            raise InputError(f"{folder} is given twice{also}: name each run folder once; its rows would only be "
                             "dropped as duplicates")
    manifests = [_manifest(f) for f in folders]
    first = manifests[0]
    for folder, manifest in zip(folders[1:], manifests[1:]):
        differs = [k for k in _MADE_BY if manifest.get(k) != first.get(k)]
        if differs:
            raise InputError(f"{folder} was labeled with a different {', '.join(differs)} than {folders[0]}: "
                             "only shards of one labeling job (same judge YAML, template and constitution) merge")
    return folders, manifests


def merge_rows(folders: list[Path], out: Path, distinct_ids: bool = False) -> dict[str, Any]:
    """The runs' dataset, preferences, unlabeled and invalid rows into `out` (deduplicated as the module says); their
    counts. Independent of merge_judgments: the two may run at once, in two processes.

    `distinct_ids`: the caller knows that no pair id is in two runs and that each run lists only its own invalid
    rows (the chunks of one service batch, whose ids the batch's validation made unique), so the rows are joined
    as they are: the Arrow files linked and the lines copied, nothing decoded."""
    if distinct_ids:
        return _join_rows(folders, RunFolder(out))
    run = RunFolder(out)
    seen_ids, seen_invalid = SeenSet(run.path, "merge-ids"), SeenSet(run.path, "merge-invalid")
    writer = DatasetWriter(run, "dataset", pairwise_features(), jsonl="preferences.jsonl")
    unlabeled, invalid = run.open_jsonl("unlabeled.jsonl"), run.open_jsonl("invalid_rows.jsonl")
    counts: Counter = Counter()
    reasons: Counter = Counter()
    given: Counter = Counter()  # rows each run added to the merge (a duplicate adds none)
    try:
        for folder in folders:  # labeled rows first, so a labeled id wins over an unlabeled one anywhere
            for table, lines in _dataset_parts(folder):
                offset = counts["rows_read"]
                ids = table.column("pair_id").to_pylist()
                repeats = seen_ids.first_seen((pair_id, offset + i) for i, pair_id in enumerate(ids))
                keep = [repeats.get(pair_id, offset + i) == offset + i for i, pair_id in enumerate(ids)]
                counts["rows_read"] += len(ids)
                counts["duplicate_rows_dropped"] += len(ids) - sum(keep)
                given[str(folder)] += sum(keep)
                writer.write_table(table.filter(keep), [line for line, kept in zip(lines, keep) if kept])
        for folder in folders:
            for line in _lines(folder / "unlabeled.jsonl"):
                row = json.loads(line)
                counts["rows_read"] += 1
                if seen_ids.first_seen([(row["pair_id"], counts["rows_read"])]):
                    counts["duplicate_rows_dropped"] += 1
                    continue
                given[str(folder)] += 1
                unlabeled.write([row])
                reasons[reason_kind(row.get("reason"))] += 1
            for line in _lines(folder / "invalid_rows.jsonl"):  # every shard lists the input's bad rows
                row = json.loads(line)
                if not seen_invalid.first_seen([(f"{row.get('file')}:{row.get('line')}", 0)]):
                    invalid.write([row])
    finally:
        seen_ids.close()
        seen_invalid.close()
    return {"runs": len(folders), "labeled": writer.close(), "unlabeled": unlabeled.close(),
            "unlabeled_reasons": dict(reasons), "invalid_rows": invalid.close(),
            "duplicate_rows_dropped": counts["duplicate_rows_dropped"], "rows_by_run": _by_run(folders, given)}


def _by_run(folders: list[Path], given: Counter) -> dict[str, int]:
    """Rows (labeled and unlabeled) each run added, every run named even when it added none."""
    return {str(folder): given[str(folder)] for folder in folders}


def _join_rows(folders: list[Path], run: RunFolder) -> dict[str, Any]:
    writer = DatasetWriter(run, "dataset", pairwise_features(), jsonl="preferences.jsonl")
    unlabeled, invalid = run.open_jsonl("unlabeled.jsonl"), run.open_jsonl("invalid_rows.jsonl")
    reasons: Counter = Counter()
    given: Counter = Counter()
    for folder in folders:
        try:
            given[str(folder)] += writer.add_files(saved_data_files(folder / "dataset"), folder / "preferences.jsonl")
        except ValueError as exc:
            raise InputError(f"{folder}: {exc}: the run folder was changed after labeling; label it again") from exc
        for line in _lines(folder / "unlabeled.jsonl"):
            row = json.loads(line)
            unlabeled.write([row])
            given[str(folder)] += 1
            reasons[reason_kind(row.get("reason"))] += 1
        for line in _lines(folder / "invalid_rows.jsonl"):
            invalid.write([json.loads(line)])
    return {"runs": len(folders), "labeled": writer.close(), "unlabeled": unlabeled.close(),
            "unlabeled_reasons": dict(reasons), "invalid_rows": invalid.close(), "duplicate_rows_dropped": 0,
            "rows_by_run": _by_run(folders, given)}


def write_merged_manifest(folders: list[Path], manifests: list[dict[str, Any]], out: Path,
                          merged: dict[str, Any]) -> dict[str, Any]:
    """The merged folder's manifest, from merge_rows' counts and merge_judgments' count (`merged`); the summary."""
    run, first = RunFolder(out), manifests[0]
    summary = {**merged, **_shard_cover(manifests), "run_dir": str(run.path)}
    write_manifest(run, {k: first[k] for k in _MADE_BY if k in first},
                   {k: v for k, v in summary.items() if k != "run_dir"}, LABEL_FILES,
                   merged_from=[{"run_dir": str(f), "counts": m.get("counts", {}), "pairs_file": m.get("pairs_file")}
                                for f, m in zip(folders, manifests)])
    return summary


def merge_judgments(folders: list[Path], out: Path) -> int:
    """judgments.jsonl of every run into `out`'s, one line per key (a final judgment wins over an unlabeled one);
    the count of keys."""
    run = RunFolder(out)
    with JudgmentIndex(run.file(JUDGMENTS)) as index:
        for folder in folders:
            batch: list[tuple[str, bool, str]] = []
            for line in _lines(folder / JUDGMENTS):
                try:
                    data = from_json(line)  # pydantic's Rust parser: ~4x json.loads on these lines
                except ValueError:
                    continue  # a torn line a killed shard left
                batch.append((data["key"], is_final(data), line))
                if len(batch) >= 4096:
                    index.add_better(batch)
                    batch = []
            index.add_better(batch)
        return index.count()


def _shard_cover(manifests: list[dict]) -> dict[str, Any]:
    """Which shards of N were merged, and which are missing (only for runs made with --shard)."""
    shards = [m.get("counts", {}).get("shard") for m in manifests]
    if not all(shards):
        return {}
    counts = {int(s.split("/")[1]) for s in shards}
    if len(counts) != 1:
        raise InputError(f"the runs were sharded differently ({sorted(set(shards))}): merge shards of one split")
    n = counts.pop()
    have = {int(s.split("/")[0]) for s in shards}
    return {"shards": f"{len(have)} of {n}", "shards_missing": sorted(set(range(n)) - have)}
