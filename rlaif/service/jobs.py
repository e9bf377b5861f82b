"""Bulk jobs: batches (a subset of OpenAI's Batch API) and audits, run one at a time in a worker thread.

A batch is a run folder under `<service dir>/batches/<id>/`:

    validating   each line of the input file checked ({custom_id, method, url, body}); its pairs (or items) go to
                 pairs.jsonl, the line to requests.jsonl, a bad line with its reason (it goes to the error file)
    in_progress  the label stage over pairs.jsonl (pointwise: the score stage), chunk by chunk, resumable
    finalizing   output.jsonl and errors.jsonl in `vllm run-batch`'s line shape, dataset.parquet
    completed | failed | cancelled

Every state is in SQLite before the work of the next one starts, and each step is safe to redo, so a service
killed at any point and started again picks its unfinished jobs up where they were: the run folder's resume
judges only what has no final label yet, and nothing is written twice.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from rlaif.judging.pointwise import ScoreItem, ScoreRecord
from rlaif.records import CandidatePair
from rlaif.service.catalogue import Catalogue, UnknownJudge
from rlaif.service.db import ServiceDB, dumps, loads, now
from rlaif.service.engines import Engines, JobCancelled
from rlaif.service.paths import audit_folder, batch_folder
from rlaif.service.results import item_result, pair_result
from rlaif.service.schemas import (
    JUDGE_ENDPOINTS,
    PairwiseReply,
    PairwiseRequest,
    PointwiseReply,
    PointwiseRequest,
    Usage,
)
from rlaif.service.settings import ServiceSettings
from rlaif.stages.label import JUDGMENTS, label_stage
from rlaif.store.index import JudgmentIndex
from rlaif.store.inputs import iter_input
from rlaif.store.runfolder import RunFolder, describe_errors, json_line

__all__ = ["JobRunner", "REQUESTS", "PAIRS", "OUTPUT", "ERRORS"]

log = logging.getLogger("rlaif.service")

REQUESTS, PAIRS, OUTPUT, ERRORS = "requests.jsonl", "pairs.jsonl", "output.jsonl", "errors.jsonl"
_DATASET_PARQUET = "dataset.parquet"


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[str]]:
    """A text file written under a temporary name and moved into place when complete: a killed writer leaves no
    half file behind (the step is redone on restart)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def _line_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def _reply_line(entry: dict, results: list[Any], pairwise: bool, judge: str) -> tuple[dict, list[str]]:
    """One request line's reply in `vllm run-batch`'s shape, and what in it got no label (or score), with why."""
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
    return line, missing


class JobRunner:
    """The bulk-job queue: jobs run one at a time, oldest first; the queue is rebuilt from SQLite at start."""

    def __init__(self, settings: ServiceSettings, db: ServiceDB, engines: Engines, catalogue: Catalogue, files: Any,
                 on_labels: Any = None):
        self.settings, self.db, self.engines, self.catalogue, self.files = settings, db, engines, catalogue, files
        self.on_labels = on_labels or (lambda outcome, n: None)
        """Called with (outcome, pairs) when a batch's label stage ends: the labels metric."""
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="rlaif-jobs", daemon=True)
        self.current: str | None = None

    def start(self) -> None:
        for kind, job_id in self.db.unfinished():
            self._queue.put((kind, job_id))
        self._thread.start()

    def submit(self, kind: str, job_id: str) -> None:
        self._queue.put((kind, job_id))

    def cancel(self, batch_id: str) -> None:
        """Ask a batch to stop: a queued one is cancelled at once, a running one at its next engine call."""
        self._cancelled.add(batch_id)
        if self.current != batch_id:
            self.db.set_status("batches", batch_id, "cancelled", only_from=("validating", "in_progress", "cancelling"))

    def depth(self) -> int:
        return self._queue.qsize() + (1 if self.current else 0)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, job_id = item
            self.current = job_id
            try:
                if kind == "batch":
                    self._run_batch(job_id)
                else:
                    self._run_audit(job_id)
            except Exception as exc:  # a job's own failure fails that job, never the worker
                log.error("job %s failed: %s", job_id, exc)
                log.debug("%s", traceback.format_exc())
                if kind == "batch":
                    self._fail_batch(job_id, "job_failed", f"{type(exc).__name__}: {exc}")
                else:
                    self.db.set_status("audits", job_id, "failed", finished_at=now(), error=f"{type(exc).__name__}: {exc}")
            finally:
                self.current = None

    # batches ---------------------------------------------------------------------------------------------
    def _fail_batch(self, batch_id: str, code: str, message: str, line: int | None = None) -> None:
        errors = {"object": "list", "data": [{"code": code, "message": message, "line": line, "param": None}]}
        self.db.set_status("batches", batch_id, "failed", errors=dumps(errors))

    def _run_batch(self, batch_id: str) -> None:
        batch = self.db.get("batches", batch_id)
        if batch is None or batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return
        if batch["status"] == "cancelling" or batch_id in self._cancelled:
            self.db.set_status("batches", batch_id, "cancelled")
            return
        folder = batch_folder(self.settings, batch_id)
        folder.mkdir(parents=True, exist_ok=True)
        pairwise = batch["endpoint"] == JUDGE_ENDPOINTS[0]
        if batch["status"] == "validating":
            total, valid, failed = self._validate(batch, folder, pairwise)
            if not valid:
                self._fail_batch(batch_id, "no_valid_requests", f"none of the {total} lines of {batch['input_file_id']} "
                                 f"is a valid {batch['endpoint']} request; see the reasons in the error file")
                self._finalize(batch, folder, pairwise, status="failed")
                return
            self.db.set_status("batches", batch_id, "in_progress", only_from=("validating",), total=total, failed=failed)
        cancelled = lambda: batch_id in self._cancelled  # noqa: E731
        backends = self.engines.backends(bulk=True, cancelled=cancelled)
        try:
            if pairwise:
                self._label(batch, folder, backends)
            else:
                self._score(batch, folder, backends)
        except JobCancelled:
            self.db.set_status("batches", batch_id, "cancelling", only_from=("in_progress",))
            self._finalize(batch, folder, pairwise, status="cancelled")
            return
        self.db.set_status("batches", batch_id, "finalizing", only_from=("in_progress",))
        self._finalize(batch, folder, pairwise, status="completed")

    def _validate(self, batch: dict, folder: Path, pairwise: bool) -> tuple[int, int, int]:
        """requests.jsonl (one entry per input line) and pairs.jsonl (the valid lines' pairs or items)."""
        source = self.files.path(batch["input_file_id"])
        request_model = PairwiseRequest if pairwise else PointwiseRequest
        judge, seen = batch["judge"], set[str]()  # the custom ids: the one thing kept per line (a 1M-line batch: ~70 MB)
        total = valid = 0
        with source.open(encoding="utf-8", errors="replace") as fh, _atomic_file(folder / PAIRS) as pairs, \
                _atomic_file(folder / REQUESTS) as requests:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                total += 1
                entry, found = self._check_line(number, text, batch["endpoint"], request_model, judge, seen)
                if "error" not in entry:
                    entry["entry"] = valid  # each pair carries its line's index (progress counts in lines)
                    pairs.writelines(json_line(r.model_copy(update={"source": {"entry": valid}})
                                               if isinstance(r, CandidatePair) else r) for r in found)
                    valid += 1
                requests.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return total, valid, total - valid

    def _check_line(self, number: int, text: str, endpoint: str, model: Any, judge: str,
                    seen: set[str]) -> tuple[dict, list]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"line": number, "custom_id": None, "error": f"line {number} is not valid JSON: {exc.msg}"}, []
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        entry: dict[str, Any] = {"line": number, "custom_id": custom_id}
        if not isinstance(data, dict):
            return {**entry, "error": "a line must be a JSON object {custom_id, method, url, body}"}, []
        if not isinstance(custom_id, str) or not custom_id:
            return {**entry, "error": "custom_id must be a non-empty string"}, []
        if custom_id in seen:
            return {**entry, "error": f"custom_id {custom_id!r} appears on an earlier line; each must be unique"}, []
        seen.add(custom_id)
        if data.get("method", "POST") != "POST":
            return {**entry, "error": "method must be POST"}, []
        if data.get("url") != endpoint:
            return {**entry, "error": f"url {data.get('url')!r} is not this batch's endpoint {endpoint}"}, []
        try:
            body = model.model_validate(data.get("body"))
        except ValidationError as exc:
            return {**entry, "error": f"body: {describe_errors(exc)}"}, []
        if body.judge is not None and body.judge != judge:
            return {**entry, "error": f"body.judge {body.judge!r} differs from this batch's judge {judge!r}; "
                                      "one batch runs one judge"}, []
        given = body.pairs if isinstance(body, PairwiseRequest) else body.items
        if len(given) > self.settings.max_items:
            return {**entry, "error": f"{len(given)} items in one line; at most {self.settings.max_items}"}, []
        ids = [custom_id if len(given) == 1 else f"{custom_id}/{i}" for i in range(len(given))]
        entry["ids"] = ids
        entry["given_ids"] = [g.id if g.id is not None else str(i) for i, g in enumerate(given)]
        if isinstance(body, PairwiseRequest):
            return entry, [CandidatePair(id=pid, prompt=p.prompt, response_1=p.response_1, response_2=p.response_2)
                           for pid, p in zip(ids, body.pairs)]
        return entry, [ScoreItem(id=pid, prompt=i.prompt, response=i.response) for pid, i in zip(ids, body.items)]

    def _progress(self, batch_id: str, pairs: Iterator) -> Iterator:
        """The pairs, passing on how many lines are done each time the label stage asks for its next chunk."""
        size = self.settings.batch_size
        for position, (number, pair) in enumerate(pairs):
            if position and position % size == 0:
                self.db.update("batches", batch_id, completed=self._entry_of(pair))
            yield number, pair

    @staticmethod
    def _entry_of(pair: Any) -> int:
        return int(pair.source.get("entry", 0)) if isinstance(pair, CandidatePair) else 0

    def _label(self, batch: dict, folder: Path, backends: Any) -> None:
        run = RunFolder(folder)
        stream = self._progress(batch["id"], iter_input(folder / PAIRS, CandidatePair))
        summary = label_stage(stream, self.catalogue.specs[batch["judge"]], backends, run, self.settings.batch_size, progress=False,
                              extra_manifest={"batch_id": batch["id"], "input_file_id": batch["input_file_id"]},
                              source=f"batch {batch['id']}")
        self.db.update("batches", batch["id"], summary=dumps({k: v for k, v in summary.items() if k != "backend_stats"}))
        self.on_labels("labeled", summary["labeled"])
        self.on_labels("unlabeled", summary["unlabeled"])

    def _score(self, batch: dict, folder: Path, backends: Any) -> None:
        from rlaif.judging.factory import make_judge
        from rlaif.stages.score import score_items

        items = [item for _, item in iter_input(folder / PAIRS, ScoreItem) if isinstance(item, ScoreItem)]
        judge = make_judge(self.catalogue.specs[batch["judge"]], backends, "pointwise", "a pointwise batch")
        result = score_items(items, judge, RunFolder(folder), self.settings.batch_size, progress=False)
        self.db.update("batches", batch["id"], summary=dumps({"items": len(items), "scored_now": result.scored_now,
                                                              "reused": result.reused}))

    def _finalize(self, batch: dict, folder: Path, pairwise: bool, status: str) -> None:
        """output.jsonl and errors.jsonl from the run folder, streamed a thousand request lines at a time (lines whose
        work is not done, in a cancelled batch, are in neither file)."""
        batch = self.db.get("batches", batch["id"]) or batch  # the file ids of an earlier, interrupted finalize
        judge = batch["judge"]
        completed = failed = 0
        with _atomic_file(folder / OUTPUT) as out, _atomic_file(folder / ERRORS) as err:
            for entries, found in self._answered(batch, folder, pairwise):
                for entry in entries:
                    if "error" in entry:
                        failed += 1
                        err.write(json.dumps({"id": _line_id(), "custom_id": entry["custom_id"], "response": {
                            "status_code": 400, "request_id": _line_id(), "body": None}, "error": {
                            "code": "invalid_request", "message": entry["error"], "line": entry["line"]}},
                            ensure_ascii=False) + "\n")
                        continue
                    results = [found.get(pid) for pid in entry["ids"]]
                    if any(r is None for r in results):
                        continue
                    line, missing = _reply_line(entry, results, pairwise, judge)
                    (err if missing else out).write(json.dumps(line, ensure_ascii=False) + "\n")
                    failed += bool(missing)
                    completed += not missing
        if pairwise and (folder / "dataset").is_dir():
            self._parquet(folder)
        fields: dict[str, Any] = {"completed": completed, "failed": failed}
        for field, name, path in (("output_file_id", "output", folder / OUTPUT), ("error_file_id", "errors", folder / ERRORS)):
            if path.stat().st_size:
                fields[field] = self.files.register(batch["owner"], "batch_output", f"{batch['id']}_{name}.jsonl", path,
                                                    file_id=batch.get(field))
        self.db.update("batches", batch["id"], **fields)
        if status != "failed":
            self.db.set_status("batches", batch["id"], status)

    def _answered(self, batch: dict, folder: Path, pairwise: bool, size: int = 1000) -> Iterator[tuple[list[dict], dict]]:
        """(request lines, pair or item id -> its result) a chunk of lines at a time: memory stays flat whatever the
        size of the batch (pointwise batches, scored in memory, read their scores once)."""
        from rlaif.judging.factory import make_judge

        if not (folder / REQUESTS).is_file():
            return
        spec, backends = self.catalogue.specs[batch["judge"]], self.engines.backends(bulk=True)
        judge: Any = make_judge(spec, backends, "pairwise") if pairwise else make_judge(spec, backends, "pointwise")
        model = CandidatePair if pairwise else ScoreItem
        records = self._scores(folder) if not pairwise else {}
        index = JudgmentIndex(folder / JUDGMENTS) if pairwise and (folder / JUDGMENTS).is_file() else None
        pairs = (p for _, p in iter_input(folder / PAIRS, model)) if (folder / PAIRS).is_file() else iter(())
        try:
            with (folder / REQUESTS).open(encoding="utf-8") as lines:
                while entries := [json.loads(line) for line in islice(lines, size)]:
                    wanted = sum(len(e["ids"]) for e in entries if "error" not in e)
                    chunk = [p for p in islice(pairs, wanted) if isinstance(p, model)]
                    yield entries, self._results(chunk, judge, index, records, pairwise)
        finally:
            if index is not None:
                index.close()

    @staticmethod
    def _results(chunk: list, judge: Any, index: JudgmentIndex | None, records: dict, pairwise: bool) -> dict[str, Any]:
        if not pairwise:
            return {item.id: item_result(item.id, records[judge.key(item)]) for item in chunk if judge.key(item) in records}
        if index is None:
            return {}
        keys = {pair.id: judge.key(pair) for pair in chunk}
        known = index.lookup(list(set(keys.values())))
        return {pair_id: pair_result(pair_id, index.read(known[key][0])) for pair_id, key in keys.items() if key in known}

    @staticmethod
    def _scores(folder: Path) -> dict[str, ScoreRecord]:
        """The latest score record per key of a pointwise batch."""
        path = folder / "scores.jsonl"
        return {r.key: r for r in RunFolder(folder).read("scores.jsonl", ScoreRecord)} if path.is_file() else {}

    @staticmethod
    def _parquet(folder: Path) -> None:
        """The preference dataset as one Parquet file, for download."""
        import pyarrow.parquet as pq

        from rlaif.store.datasets import saved_batches

        writer = None
        tmp = folder / (_DATASET_PARQUET + ".tmp")
        for batch in saved_batches(folder / "dataset"):
            if writer is None:
                writer = pq.ParquetWriter(str(tmp), batch.schema)
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
            tmp.replace(folder / _DATASET_PARQUET)

    # audits ----------------------------------------------------------------------------------------------
    def _run_audit(self, audit_id: str) -> None:
        from rlaif.audit.fingerprint import gold_fingerprint, judge_fingerprint, labels_fingerprint
        from rlaif.audit.folder import audit_metrics, save_audit
        from rlaif.audit.judging import judge_gold, match_run
        from rlaif.audit.report import gate

        audit = self.db.get("audits", audit_id)
        if audit is None or audit["status"] not in ("queued", "running"):
            return
        self.db.set_status("audits", audit_id, "running")
        request = loads(audit["request"])
        out = audit_folder(self.settings, audit_id)
        out.mkdir(parents=True, exist_ok=True)
        items, source = self._gold(request, audit["owner"])
        if request.get("batch_id") or request.get("campaign_id"):
            batch_id = request.get("batch_id") or self._campaign(request["campaign_id"])["batch_id"]
            records = match_run(items, batch_folder(self.settings, batch_id))
            judge_name = f"labels of {batch_id}"
            judge_fp = labels_fingerprint(batch_id, [r.judgment for r in records if r.judgment is not None])
        else:
            try:
                name = self.catalogue.name(request.get("judge"), "pairwise")
            except UnknownJudge as exc:
                raise ValueError(str(exc)) from None
            from rlaif.judging.factory import make_judge

            judge = make_judge(self.catalogue.specs[name], self.engines.backends(bulk=True), "pairwise", "an audit")
            records = judge_gold(items, judge, RunFolder(out), self.settings.batch_size, progress=False)
            judge_name, judge_fp = name, judge_fingerprint(judge)
        tie_margin = request.get("tie_margin", 0.0)
        metrics, rows = audit_metrics(records, {"judge": judge_fp, "gold": gold_fingerprint(items, source)}, tie_margin,
                                      n_boot=request.get("bootstrap", 1000), seed=request.get("seed", 0))
        meta: dict[str, Any] = {"judge": judge_name, "gold": source, "audit_id": audit_id}
        meta["gate"] = gate(metrics, request.get("min_kappa"), request.get("min_accuracy"))
        save_audit(out, metrics, rows, meta)
        agreement = metrics.get("agreement") or {}
        result = {"judge": judge_name, "gold": source, "gate": meta["gate"], "n_items": len(items),
                  "accuracy_no_ties": (agreement.get("accuracy_no_ties") or {}).get("value"),
                  "cohen_kappa": (agreement.get("cohen_kappa") or {}).get("value")}
        self.db.set_status("audits", audit_id, "completed", finished_at=now(), result=dumps(result))

    def _campaign(self, campaign_id: str) -> dict:
        campaign = self.db.get("campaigns", campaign_id)
        if campaign is None:
            raise ValueError(f"campaign {campaign_id} not found")
        return campaign

    def _gold(self, request: dict, owner: str) -> tuple[list, str]:
        from rlaif.audit.gold import load_gold

        if request.get("campaign_id"):
            from rlaif.service.campaign_data import campaign_gold

            items = campaign_gold(self.db, self.settings, request["campaign_id"])
            if not items:
                raise ValueError("the campaign has no human label yet: label some items on its page first")
            return items, f"human labels of {request['campaign_id']}"
        items, bad = load_gold(self.files.path(request["gold_file_id"]))
        if not items:
            raise ValueError(f"gold file {request['gold_file_id']} has no usable item ({len(bad)} invalid rows)")
        return items, request["gold_file_id"]
