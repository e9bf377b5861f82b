"""Bulk labeling jobs (a subset of OpenAI's Batch API) as leasable tasks, one run folder per batch:

    validate   (status validating)   check each input line and cut the lines into chunks (batch_input.py); then
                                     one label task per chunk and a finalize task, and the batch is in_progress
    label #i   (in_progress)         the executor labels (or scores) chunk i into its own run folder, resumable,
                                     and writes the chunk's reply lines (batch_output.py)
    finalize   (finalizing)          once no chunk is waiting or running: join the chunks' replies, merge their run
                                     folders, register the output and error files; completed | failed | cancelled
                                     | expired

The steps' own work runs in the worker's child processes (rlaif.service.offload), so the API is not held up by it.
Any worker may run any task (the scheduler leases them); each step is safe to redo, so a worker killed at any point
costs at most the unfinished part of its chunk, which the next holder resumes from the chunk's run folder: no label
is lost or written twice. A batch whose every line is invalid ends failed, with its counts and the error file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlaif.judging.identity import JudgeIdentity
from rlaif.service.batch_input import PAIRS, chunk_folder, cut_into_chunks
from rlaif.service.batch_output import ERRORS, OUTPUT, finished_chunks, join_parts, write_chunk_replies, write_parquet
from rlaif.service.catalogue import Catalogue
from rlaif.service.engines import JobCancelled
from rlaif.service.executors import Executor
from rlaif.service.files import FileStore
from rlaif.service.offload import Offload, Remote
from rlaif.service.paths import batch_folder
from rlaif.service.records import FINALIZE_IDX, BatchJob, BatchStatus, Task, TaskKind, TaskState
from rlaif.service.settings import ServiceSettings
from rlaif.service.store import JobStore, now
from rlaif.stages.merge import check_runs, merge_judgments, merge_rows, write_merged_manifest
from rlaif.store.runfolder import RunFolder

__all__ = ["BatchWork"]

log = logging.getLogger("rlaif.service")

Stop = Callable[[], bool]


class BatchWork:
    """Runs a batch's tasks; the scheduler decides which task runs where and when."""

    def __init__(self, settings: ServiceSettings, store: JobStore, files: FileStore, catalogue: Catalogue,
                 executor: Executor, offload: Offload, on_labels: Callable[[str, int], None] | None = None):
        self.settings, self.store, self.files, self.catalogue, self.executor = settings, store, files, catalogue, executor
        self.offload = offload
        self.on_labels = on_labels or (lambda outcome, n: None)

    def run(self, task: Task, stop: Stop) -> None:
        batch = self.store.batches.get(task.job_id)
        if batch is None:
            return
        if task.kind == TaskKind.validate:
            self._validate(batch, stop)
        elif task.kind == TaskKind.label:
            self._label(batch, task, stop)
        else:
            self._finalize(batch)

    def fail(self, task: Task, error: BaseException) -> None:
        """A task's own failure fails its batch (the message says why); the batch's other work is dropped."""
        message = f"{type(error).__name__}: {error}"
        self.store.batches.set_status(task.job_id, BatchStatus.failed, errors={"object": "list", "data": [
            {"code": "job_failed", "message": message, "line": None, "param": None}]})
        for other in self.store.tasks.of(task.job_id):
            if other.state == TaskState.todo:
                self.store.tasks.finish(other, TaskState.cancelled)

    # validate ----------------------------------------------------------------------------------------------
    def _validate(self, batch: BatchJob, stop: Stop) -> None:
        folder = batch_folder(self.settings, batch.id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = self.files.path(batch.input_file_id)
        began = time.perf_counter()
        chunks = self.offload.call(_cut, source, folder, batch.endpoint, batch.judge, self.settings.max_items,
                                   self.settings.chunk_pairs, stop=stop)
        total = sum(c.lines for c in chunks)
        invalid = total - sum(c.valid_lines for c in chunks)
        created = now()
        with self.store.db.transaction():
            stopped = (self.store.batches.get(batch.id) or batch).stop_reason is not None
            state = TaskState.cancelled if stopped else TaskState.todo
            self.store.tasks.add([Task(job_id=batch.id, idx=c.idx, kind=TaskKind.label, owner=batch.owner, state=state,
                                       created_at=created, lines=c.lines) for c in chunks]
                                 + [Task(job_id=batch.id, idx=FINALIZE_IDX, kind=TaskKind.finalize, owner=batch.owner,
                                         state=TaskState.todo, created_at=created)])
            self.store.batches.update(batch.id, total=total, failed=invalid, chunks=len(chunks),
                                      summary={"invalid_lines": invalid})
            self.store.batches.set_status(batch.id, BatchStatus.in_progress, only_from=(BatchStatus.validating,))
        log.info("batch %s: %d lines (%d invalid) in %d chunks, checked in %.1f s", batch.id, total, invalid, len(chunks),
                 time.perf_counter() - began)

    # label -------------------------------------------------------------------------------------------------
    def _label(self, batch: BatchJob, task: Task, stop: Stop) -> None:
        chunk = chunk_folder(batch_folder(self.settings, batch.id), task.idx)
        spec = self.catalogue.specs[batch.judge]
        run = RunFolder(chunk)
        if stop():
            raise JobCancelled()
        began = time.perf_counter()
        if batch.pairwise:
            summary = self.executor.label(spec, chunk / PAIRS, run, stop)
            for outcome in ("labeled", "unlabeled"):
                self.on_labels(outcome, summary[outcome])
        else:
            self.executor.score(spec, chunk / PAIRS, run, stop)
        labeled = time.perf_counter()
        completed, failed, _ = self.offload.call(_replies, chunk, self.catalogue.identity(batch.judge), batch.pairwise,
                                                 stop=lambda: False)
        self.store.batches.add_progress(batch.id, completed, failed)  # invalid lines were counted at validation
        log.info("batch %s chunk %d: %d lines, judged in %.1f s, reply lines in %.1f s", batch.id, task.idx,
                 completed + failed, labeled - began, time.perf_counter() - labeled)

    # finalize ----------------------------------------------------------------------------------------------
    def _finalize(self, batch: BatchJob) -> None:
        folder = batch_folder(self.settings, batch.id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if batch.status in (BatchStatus.validating, BatchStatus.in_progress):
            self.store.batches.set_status(batch.id, BatchStatus.finalizing, only_from=(batch.status,))
        done = [chunk_folder(folder, t.idx) for t in self.store.tasks.of(batch.id)
                if t.kind == TaskKind.label and t.state == TaskState.done]
        began = time.perf_counter()
        completed, failed, merged = self._outputs(done, folder, batch.pairwise)
        log.info("batch %s: %d chunks merged in %.1f s", batch.id, len(done), time.perf_counter() - began)
        summary: dict[str, Any] = {**(batch.summary or {}), "chunks_done": len(done), "chunks": batch.chunks}
        summary.update({k: merged[k] for k in ("rows", "labeled", "unlabeled", "invalid_rows") if k in merged})
        fields: dict[str, Any] = {"completed": completed, "failed": failed, "summary": summary}
        for field, name, path in (("output_file_id", "output", folder / OUTPUT), ("error_file_id", "errors", folder / ERRORS)):
            if path.stat().st_size:
                fields[field] = self.files.register(batch.owner, "batch_output", f"{batch.id}_{name}.jsonl", path,
                                                    file_id=getattr(batch, field))
        self.store.batches.update(batch.id, **fields)
        self._final_status(batch, completed, failed)

    def _outputs(self, done: list[Path], folder: Path, pairwise: bool) -> tuple[int, int, dict[str, Any]]:
        """The reply lines joined; for pairwise chunks, their label run folders merged into the batch folder
        (rlaif.stages.merge): the rows (and the Parquet download) and the judgments at once, in two child
        processes when a second one is idle."""
        never = lambda: False  # noqa: E731  (the finalize step runs to its end)
        finished = finished_chunks(done) if pairwise else []
        folders, manifests = check_runs(finished, folder) if finished else ([], [])
        judged = self.offload.beside(_judgments, folders, folder, stop=never) if folders else None
        completed, failed, rows = self.offload.call(_rows, done, folders, folder, stop=never)
        if not folders:
            return completed, failed, {}
        judgments = judged.result() if judged is not None else self.offload.call(_judgments, folders, folder, stop=never)
        return completed, failed, write_merged_manifest(folders, manifests, folder, {**rows, "judgments": judgments})

    def _final_status(self, batch: BatchJob, completed: int, failed: int) -> None:
        latest = self.store.batches.get(batch.id) or batch
        if latest.stop_reason == "cancel":
            self.store.batches.set_status(batch.id, BatchStatus.cancelled)
        elif latest.stop_reason == "expire":
            self.store.batches.set_status(batch.id, BatchStatus.expired)
        elif latest.total and (latest.summary or {}).get("invalid_lines") == latest.total:
            self.store.batches.set_status(batch.id, BatchStatus.failed, errors={"object": "list", "data": [{
                "code": "no_valid_requests", "line": None, "param": None,
                "message": f"none of the {latest.total} lines of {batch.input_file_id} is a valid {batch.endpoint} "
                           "request; see each line's reason in the error file"}]})
        else:
            self.store.batches.set_status(batch.id, BatchStatus.completed)


# the steps' work, run in a child process (module-level, so they pickle) ------------------------------------------
def _cut(remote: Remote, source: Path, folder: Path, endpoint: str, judge: str, max_items: int,
         chunk_pairs: int) -> list:
    return cut_into_chunks(source, folder, endpoint, judge, max_items, chunk_pairs, remote.stop)


def _replies(remote: Remote, chunk: Path, identity: JudgeIdentity, pairwise: bool) -> tuple[int, int, int]:
    return write_chunk_replies(chunk, identity, pairwise)


def _rows(remote: Remote, done: list[Path], folders: list[Path], folder: Path) -> tuple[int, int, dict[str, Any]]:
    """The reply lines joined; the checked chunk run `folders` (none for pointwise) merged row by row."""
    completed, failed = join_parts(done, folder)
    if not folders:
        return completed, failed, {}
    rows = merge_rows(folders, folder, distinct_ids=True)  # custom ids are unique in a batch
    write_parquet(folder)
    return completed, failed, rows


def _judgments(remote: Remote, finished: list[Path], folder: Path) -> int:
    return merge_judgments(finished, folder)
