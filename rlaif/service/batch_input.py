"""A batch's input file, checked line by line and cut into chunks (the validate step of a batch).

Each line must be `{custom_id, method, url, body}` with a body the batch's endpoint accepts. A line that is not
(not UTF-8, not JSON, a repeated custom_id, a body that does not validate, another judge) is kept as an entry with
its reason: it goes to the error file, and the rest of the batch goes on. The lines are cut into chunks of about
`chunk_pairs` pairs (never splitting a line), each a folder with the chunk's request entries and its pairs:

    <batch>/chunks/000001/requests.jsonl   one entry per input line: {line, custom_id, ids, given_ids} or {..., error}
    <batch>/chunks/000001/pairs.jsonl      the valid lines' pairs (or items), ids `<custom_id>` or `<custom_id>/<i>`

The custom ids are the one thing held per line while checking (a 1M-line batch: about 70 MB).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from rlaif.judging.pointwise import ScoreItem
from rlaif.records import CandidatePair
from rlaif.service.schemas import PairwiseRequest, PointwiseRequest
from rlaif.store.runfolder import describe_errors, json_line

__all__ = ["ChunkSpec", "cut_into_chunks", "chunk_folder", "REQUESTS", "PAIRS", "CHUNKS"]

REQUESTS, PAIRS, CHUNKS = "requests.jsonl", "pairs.jsonl", "chunks"


def chunk_folder(batch_folder: Path, idx: int) -> Path:
    return batch_folder / CHUNKS / f"{idx:06d}"


@dataclass
class ChunkSpec:
    idx: int
    lines: int = 0
    valid_lines: int = 0
    pairs: int = 0


@dataclass
class _Cut:
    folder: Path
    chunk_pairs: int
    chunks: list[ChunkSpec] = field(default_factory=list)
    _requests: IO[str] | None = None
    _pairs: IO[str] | None = None

    def add(self, entry: dict[str, Any], found: list) -> None:
        if self._requests is None or (found and self.chunks[-1].pairs >= self.chunk_pairs):
            self._next()
        assert self._requests is not None and self._pairs is not None
        chunk = self.chunks[-1]
        chunk.lines += 1
        if found:
            chunk.valid_lines += 1
            chunk.pairs += len(found)
            self._pairs.writelines(json_line(r) for r in found)
        self._requests.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _next(self) -> None:
        self.close()
        spec = ChunkSpec(idx=len(self.chunks) + 1)
        target = chunk_folder(self.folder, spec.idx)
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._requests = (target / REQUESTS).open("w", encoding="utf-8")
        self._pairs = (target / PAIRS).open("w", encoding="utf-8")
        self.chunks.append(spec)

    def close(self) -> None:
        for fh in (self._requests, self._pairs):
            if fh is not None:
                fh.close()
        self._requests = self._pairs = None


def cut_into_chunks(source: Path, folder: Path, endpoint: str, judge: str, max_items: int, chunk_pairs: int,
                    stop: Callable[[], bool]) -> list[ChunkSpec]:
    """Check every line of `source` and write the chunks; `stop()` is asked every 10,000 lines."""
    checker = _LineChecker(endpoint, judge, max_items)
    cut = _Cut(folder, chunk_pairs)
    try:
        with source.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                if number % 10_000 == 0 and stop():
                    from rlaif.service.engines import JobCancelled

                    raise JobCancelled()
                entry, found = checker.check(number, raw)
                cut.add(entry, found)
    finally:
        cut.close()
    return cut.chunks


class _LineChecker:
    def __init__(self, endpoint: str, judge: str, max_items: int):
        self.endpoint, self.judge, self.max_items = endpoint, judge, max_items
        self.model: Any = PairwiseRequest if endpoint == "/v1/judge/pairwise" else PointwiseRequest
        self.seen: set[str] = set()

    def check(self, number: int, raw: bytes) -> tuple[dict[str, Any], list]:
        """(the line's entry, its pairs or items); an entry with "error" has none."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return {"line": number, "custom_id": None, "error": f"line {number} is not valid UTF-8 (byte "
                                                                f"0x{raw[exc.start]:02x} at position {exc.start})"}, []
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"line": number, "custom_id": None, "error": f"line {number} is not valid JSON: {exc.msg}"}, []
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        entry: dict[str, Any] = {"line": number, "custom_id": custom_id}
        problem = self._problem(data, custom_id)
        if problem:
            return {**entry, "error": problem}, []
        try:
            body = self.model.model_validate(data.get("body"))
        except ValidationError as exc:
            return {**entry, "error": f"body: {describe_errors(exc)}"}, []
        if body.judge is not None and body.judge != self.judge:
            return {**entry, "error": f"body.judge {body.judge!r} differs from this batch's judge {self.judge!r}; "
                                      "one batch runs one judge"}, []
        given = body.pairs if isinstance(body, PairwiseRequest) else body.items
        if len(given) > self.max_items:
            return {**entry, "error": f"{len(given)} items in one line; at most {self.max_items}"}, []
        ids = [custom_id if len(given) == 1 else f"{custom_id}/{i}" for i in range(len(given))]
        entry["ids"] = ids
        entry["given_ids"] = [g.id if g.id is not None else str(i) for i, g in enumerate(given)]
        if isinstance(body, PairwiseRequest):
            return entry, [CandidatePair(id=pid, prompt=p.prompt, response_1=p.response_1, response_2=p.response_2)
                           for pid, p in zip(ids, body.pairs)]
        return entry, [ScoreItem(id=pid, prompt=i.prompt, response=i.response) for pid, i in zip(ids, body.items)]

    def _problem(self, data: Any, custom_id: Any) -> str | None:
        if not isinstance(data, dict):
            return "a line must be a JSON object {custom_id, method, url, body}"
        if not isinstance(custom_id, str) or not custom_id:
            return "custom_id must be a non-empty string"
        if custom_id in self.seen:
            return f"custom_id {custom_id!r} appears on an earlier line; each must be unique"
        self.seen.add(custom_id)
        if data.get("method", "POST") != "POST":
            return "method must be POST"
        if data.get("url") != self.endpoint:
            return f"url {data.get('url')!r} is not this batch's endpoint {self.endpoint}"
        return None
