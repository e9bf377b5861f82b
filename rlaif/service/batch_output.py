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
from rlaif.records import CandidatePair
from rlaif.service.batch_input import PAIRS, REQUESTS
from rlaif.service.results import item_result, pair_result
from rlaif.service.schemas import PairwiseReply, PointwiseReply, Usage
from rlaif.stages.label import JUDGMENTS
from rlaif.store.index import JudgmentIndex
from rlaif.store.inputs import iter_input
from rlaif.store.runfolder import RunFolder

__all__ = ["write_chunk_replies", "join_parts", "merge_chunks", "write_parquet", "OUTPUT", "ERRORS", "DATASET_PARQUET"]

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


def _line_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def _reply_line(entry: dict, results: list[Any], pairwise: bool, judge: str) -> tuple[dict, bool]:
    """One request line's reply in `vllm run-batch`'s shape, and whether something in it got no label (or score)."""
    field = "pair_id" if pairwise else "item_id"
    named = [r.model_copy(update={field: given}) for r, given in zip(results, entry["given_ids"])]
    usage = Usage.of(named)
    body = (PairwiseReply(judge=judge, results=named, usage=usage) if pairwise
            else PointwiseReply(judge=judge, results=named, usage=usage))
    missing = [f"{getattr(r, field)}: {r.reason}" for r in named if (r.label if pairwise else r.score) is None]
    line = {"id": _line_id(), "custom_id": entry["custom_id"],
            "response": {"status_code": 422 if missing else 200, "request_id": _line_id(),
                         "body": body.model_dump(mode="json")},
            "error": {"code": "unlabeled" if pairwise else "unscored", "message": "; ".join(missing)} if missing else None}
    return line, bool(missing)


def _invalid_line(entry: dict) -> dict:
    return {"id": _line_id(), "custom_id": entry["custom_id"], "response": {"status_code": 400, "request_id": _line_id(),
            "body": None}, "error": {"code": "invalid_request", "message": entry["error"], "line": entry["line"]}}


def write_chunk_replies(chunk: Path, identity: JudgeIdentity, pairwise: bool, size: int = 1000) -> tuple[int, int, int]:
    """The chunk's output and errors parts from its run folder; (lines answered in full, lines with a pair left
    unlabeled or an item unscored, invalid lines)."""
    model: Any = CandidatePair if pairwise else ScoreItem
    pairs = (p for _, p in iter_input(chunk / PAIRS, model))
    scores = _scores(chunk) if not pairwise else {}
    index = JudgmentIndex(chunk / JUDGMENTS) if pairwise and (chunk / JUDGMENTS).is_file() else None
    completed = failed = invalid = 0
    try:
        with (chunk / REQUESTS).open(encoding="utf-8") as lines, atomic_file(chunk / OUTPUT) as out, \
                atomic_file(chunk / ERRORS) as err:
            while entries := [json.loads(line) for line in islice(lines, size)]:
                wanted = sum(len(e["ids"]) for e in entries if "error" not in e)
                found = _results([p for p in islice(pairs, wanted) if isinstance(p, model)], identity, index, scores)
                for entry in entries:
                    if "error" in entry:
                        invalid += 1
                        err.write(json.dumps(_invalid_line(entry), ensure_ascii=False) + "\n")
                        continue
                    results = [found.get(pid) for pid in entry["ids"]]
                    if any(r is None for r in results):
                        continue  # not judged (a stopped chunk): in neither file
                    line, missing = _reply_line(entry, results, pairwise, identity.name)
                    (err if missing else out).write(json.dumps(line, ensure_ascii=False) + "\n")
                    failed += missing
                    completed += not missing
    finally:
        if index is not None:
            index.close()
    return completed, failed, invalid


def _results(chunk: list, identity: JudgeIdentity, index: JudgmentIndex | None, scores: dict) -> dict[str, Any]:
    if index is None:
        return {item.id: item_result(item.id, scores[k]) for item in chunk if (k := identity.item_key(item)) in scores}
    keys = {pair.id: identity.key(pair) for pair in chunk}
    known = index.lookup(list(set(keys.values())))
    return {pair_id: pair_result(pair_id, index.read(known[key][0])) for pair_id, key in keys.items() if key in known}


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


def merge_chunks(chunks: list[Path], folder: Path) -> dict[str, Any]:
    """The chunks' label run folders merged into the batch folder (rlaif.stages.merge)."""
    from rlaif.stages.merge import merge_runs

    finished = [c for c in chunks if (c / "manifest.json").is_file() and (c / "dataset").is_dir()]
    return merge_runs(finished, folder) if finished else {}


def write_parquet(folder: Path) -> None:
    """The preference dataset as one Parquet file, for download."""
    import pyarrow.parquet as pq

    from rlaif.store.datasets import saved_batches

    if not (folder / "dataset").is_dir():
        return
    writer = None
    tmp = folder / (DATASET_PARQUET + ".tmp")
    for batch in saved_batches(folder / "dataset"):
        if writer is None:
            writer = pq.ParquetWriter(str(tmp), batch.schema)
        writer.write_batch(batch)
    if writer is not None:
        writer.close()
        os.chmod(tmp, 0o600)
        tmp.replace(folder / DATASET_PARQUET)
