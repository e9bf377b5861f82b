"""A batch's outputs: each chunk's reply lines, and the batch's files once every chunk is done.

A finished chunk writes its own `output.jsonl` and `errors.jsonl` parts (in `vllm run-batch`'s line shape, one line
per request line of the chunk): a line whose every pair got a label goes to the output part; an invalid line, or one
with a pair left unlabeled (with the reason), goes to the errors part. Finalizing a batch joins the parts in chunk
order, merges the chunks' label run folders into the batch folder (`rlaif merge`: the preference dataset,
preferences.jsonl, unlabeled.jsonl, judgments) and writes dataset.parquet for download. Lines of chunks that never
ran (a cancelled or expired batch) are in neither file.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

from rlaif.judging.identity import JudgeIdentity
from rlaif.judging.pointwise import ScoreItem, ScoreRecord
from rlaif.records import CandidatePair, Judgment
from rlaif.service.batch_input import PAIRS, REQUESTS
from rlaif.service.results import ROW_FIELDS, item_result, pair_result, row_result
from rlaif.service.schemas import PairwiseReply, PointwiseReply, Usage
from rlaif.stages.label import JUDGMENTS
from rlaif.store.index import JudgmentIndex
from rlaif.store.runfolder import RunFolder, json_line

__all__ = ["write_chunk_replies", "join_parts", "finished_chunks", "write_parquet", "OUTPUT", "ERRORS", "DATASET_PARQUET"]

OUTPUT, ERRORS, DATASET_PARQUET = "output.jsonl", "errors.jsonl", "dataset.parquet"


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """A text file written under a temporary name and moved into place when complete (mode 0600): a killed writer
    leaves no half file behind, and the step is redone by whoever takes the task next."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


class _LineIds:
    """Reply line ids: a random prefix per chunk and a counter (one random draw per line was a tenth of the step)."""

    def __init__(self) -> None:
        self.prefix, self.count = "batch_req_" + secrets.token_hex(6), 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count:012x}"


def _reply_line(entry: dict, judged: list[Any], pairwise: bool, judge: str, line_id: _LineIds) -> tuple[dict, bool]:
    """One request line's reply in `vllm run-batch`'s shape, and whether something in it got no label (or score)."""
    named = [_result(given, found) for found, given in zip(judged, entry["given_ids"])]
    usage = Usage.of(named)
    body = (PairwiseReply(judge=judge, results=named, usage=usage) if pairwise
            else PointwiseReply(judge=judge, results=named, usage=usage))
    field = "pair_id" if pairwise else "item_id"
    missing = [f"{getattr(r, field)}: {r.reason}" for r in named if (r.label if pairwise else r.score) is None]
    line = {"id": line_id(), "custom_id": entry["custom_id"],
            "response": {"status_code": 422 if missing else 200, "request_id": line_id(), "body": body},
            "error": {"code": "unlabeled" if pairwise else "unscored", "message": "; ".join(missing)} if missing else None}
    return line, bool(missing)


def _invalid_line(entry: dict, line_id: _LineIds) -> dict:
    return {"id": line_id(), "custom_id": entry["custom_id"], "response": {"status_code": 400, "request_id": line_id(),
            "body": None}, "error": {"code": "invalid_request", "message": entry["error"], "line": entry["line"]}}


def write_chunk_replies(chunk: Path, identity: JudgeIdentity, pairwise: bool, size: int = 1000) -> tuple[int, int, int]:
    """The chunk's output and errors parts from its run folder; (lines answered in full, lines with a pair left
    unlabeled or an item unscored, invalid lines)."""
    model: Any = CandidatePair if pairwise else ScoreItem
    scores = _scores(chunk) if not pairwise else {}
    index = JudgmentIndex(chunk / JUDGMENTS) if pairwise and (chunk / JUDGMENTS).is_file() else None
    rows = _labeled_rows(chunk) if index is not None else {}
    completed = failed = invalid = 0
    line_id = _LineIds()
    try:
        with (chunk / REQUESTS).open(encoding="utf-8") as lines, (chunk / PAIRS).open(encoding="utf-8") as pairs, \
                atomic_file(chunk / OUTPUT) as out, atomic_file(chunk / ERRORS) as err:
            while entries := [json.loads(line) for line in islice(lines, size)]:
                ids = [pid for e in entries if "error" not in e for pid in e["ids"]]  # pairs.jsonl's order
                # a pair is parsed only when it has no row (the chunk's own file: every line is a valid record)
                unrowed = [model.model_validate_json(raw) for pid, raw in zip(ids, islice(pairs, len(ids)))
                           if pid not in rows]
                found = _found(unrowed, identity, index, scores) | {pid: rows[pid] for pid in ids if pid in rows}
                for entry in entries:
                    if "error" in entry:
                        invalid += 1
                        err.write(json_line(_invalid_line(entry, line_id)))
                        continue
                    judged = [found.get(pid) for pid in entry["ids"]]
                    if any(j is None for j in judged):
                        continue  # not judged (a stopped chunk): in neither file
                    line, missing = _reply_line(entry, judged, pairwise, identity.name, line_id)
                    (err if missing else out).write(json_line(line))
                    failed += missing
                    completed += not missing
    finally:
        if index is not None:
            index.close()
    return completed, failed, invalid


def _result(given: str, found: Any) -> Any:
    if isinstance(found, dict):
        return row_result(given, found)
    return pair_result(given, found) if isinstance(found, Judgment) else item_result(given, found)


def _labeled_rows(chunk: Path) -> dict[str, dict]:
    """The chunk's labeled pairs by id, from its preference dataset's columns (parsing each judgment's JSON, its
    verdicts' logprobs included, was most of this step)."""
    from rlaif.store.datasets import saved_batches

    if not (chunk / "dataset").is_dir():
        return {}
    rows: dict[str, dict] = {}
    for batch in saved_batches(chunk / "dataset"):
        for row in batch.select(["pair_id", "chosen_is_response_1", *ROW_FIELDS]).to_pylist():
            rows[row["pair_id"]] = row
    return rows


def _found(chunk: list, identity: JudgeIdentity, index: JudgmentIndex | None, scores: dict) -> dict[str, Any]:
    """The judgment (or score record) of each pair (or item) of `chunk` that was judged, by its id."""
    if index is None:
        return {item.id: scores[k] for item in chunk if (k := identity.item_key(item)) in scores}
    keys = {pair.id: identity.key(pair) for pair in chunk}  # unlabeled, ties, duplicates (the labeled have rows)
    known = index.lookup(list(set(keys.values())))
    read: dict[str, Any] = {}
    return {pair_id: read[key] if key in read else read.setdefault(key, index.read(known[key][0]))
            for pair_id, key in keys.items() if key in known}


def _scores(folder: Path) -> dict[str, ScoreRecord]:
    """The latest score record per key of a pointwise chunk."""
    path = folder / "scores.jsonl"
    return {r.key: r for r in RunFolder(folder).read("scores.jsonl", ScoreRecord)} if path.is_file() else {}


def join_parts(chunks: list[Path], folder: Path) -> tuple[int, int]:
    """output.jsonl and errors.jsonl of the batch from its chunks' parts, in order; (output lines, error lines)."""
    counts = []
    for name in (OUTPUT, ERRORS):
        lines = 0
        with atomic_file(folder / name) as joined:
            for chunk in chunks:
                part = chunk / name
                if part.is_file():
                    with part.open(encoding="utf-8") as fh:
                        while block := fh.read(1 << 20):
                            joined.write(block)
                            lines += block.count("\n")
        counts.append(lines)
    return counts[0], counts[1]


def finished_chunks(chunks: list[Path]) -> list[Path]:
    """The chunks whose label run folder was written to its end (a manifest and a dataset): those merge."""
    return [c for c in chunks if (c / "manifest.json").is_file() and (c / "dataset").is_dir()]


def write_parquet(folder: Path, group_bytes: int = 8 << 20) -> None:
    """The preference dataset as one Parquet file, for download: row groups of about `group_bytes` (the dataset's
    64-row batches as row groups each would bloat the file's metadata, held in memory until the writer closes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlaif.store.datasets import saved_batches

    if not (folder / "dataset").is_dir():
        return
    writer, group, size = None, [], 0
    tmp = folder / (DATASET_PARQUET + ".tmp")
    for batch in saved_batches(folder / "dataset"):
        if writer is None:
            writer = pq.ParquetWriter(str(tmp), batch.schema)
        group.append(batch)
        size += batch.nbytes
        if size >= group_bytes:
            writer.write_table(pa.Table.from_batches(group), row_group_size=sum(b.num_rows for b in group))
            group, size = [], 0
    if writer is not None:
        if group:
            writer.write_table(pa.Table.from_batches(group), row_group_size=sum(b.num_rows for b in group))
        writer.close()
        os.chmod(tmp, 0o600)
        tmp.replace(folder / DATASET_PARQUET)
