"""The scheduler: it only schedules. Each worker process runs one, sharing the job store with every other worker.

`slots` threads each lease the next task (round-robin across keys, `Tasks.lease`), hand it to the work that runs
its kind, and mark it done. One more thread renews the leases of the tasks in hand every quarter lease, and tells
a task to stop at its next engine call when its job was cancelled or expired, when its lease was lost (another worker
took the task), or when the worker shuts down (its tasks are given back at once). It also stops batches whose
completion window has passed. A worker that is killed renews nothing: its tasks go to the others when their leases
run out, and the run folders they left resume.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rlaif.service.engines import JobCancelled
from rlaif.service.records import Task, TaskKind, TaskState
from rlaif.service.store import JobStore

__all__ = ["Scheduler", "Work", "worker_name"]

log = logging.getLogger("rlaif.service")


class Work(Protocol):
    def run(self, task: Task, stop: Callable[[], bool]) -> None:
        """Do the task; raise JobCancelled when `stop()` says so."""
        ...

    def fail(self, task: Task, error: BaseException) -> None:
        """Record that the task failed (its job fails with the reason)."""
        ...


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Held:
    task: Task
    renewed: float = field(default_factory=time.monotonic)
    lost: bool = False
    stopped: bool = False


class Scheduler:
    def __init__(self, store: JobStore, work: dict[TaskKind, Work], lease_s: float = 30.0, slots: int = 1,
                 poll_s: float = 0.5, worker: str | None = None):
        self.store, self.work, self.lease_s, self.slots, self.poll_s = store, work, lease_s, slots, poll_s
        self.worker = worker or worker_name()
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"rlaif-tasks-{i}", daemon=True) for i in range(slots)]
        self._threads.append(threading.Thread(target=self._keep_leases, name="rlaif-leases", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """New work was queued by this process: look now instead of at the next poll."""
        self._wake.set()

    def running(self) -> int:
        with self._lock:
            return len(self._held)

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking tasks; tasks in hand stop at their next engine call and are given back to the store."""
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    # the task threads ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                task = self.store.tasks.lease(self.worker, self.lease_s, tuple(self.work))
            except Exception as exc:  # the store is unreachable for a moment: try again later
                log.warning("leasing a task failed: %s", exc)
                task = None
            if task is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self._do(task)

    def _do(self, task: Task) -> None:
        held = _Held(task)
        with self._lock:
            self._held[task.name] = held
        stop = (lambda: False) if task.kind == TaskKind.finalize else (
            lambda: held.lost or held.stopped or self._closing.is_set())
        try:
            self.work[task.kind].run(task, stop)
            if not self.store.tasks.finish(task):
                log.warning("task %s: finished after its lease ran out (another worker has it)", task.name)
        except JobCancelled:
            self._stopped(held)
        except Exception as exc:  # a task's own failure fails its job, never the worker
            log.error("task %s failed: %s", task.name, exc)
            log.debug("%s", traceback.format_exc())
            if not held.lost:
                self.work[task.kind].fail(task, exc)
                self.store.tasks.finish(task, TaskState.cancelled)
        finally:
            with self._lock:
                self._held.pop(task.name, None)
            self._wake.set()

    def _stopped(self, held: _Held) -> None:
        if held.lost:
            log.info("task %s: lease lost, left to the worker that holds it now", held.task.name)
        elif held.stopped:
            self.store.tasks.finish(held.task, TaskState.cancelled)
        else:  # this worker is shutting down: another may take the task at once
            self.store.tasks.release(held.task)

    # the lease thread ----------------------------------------------------------------------------------------
    def _keep_leases(self) -> None:
        every = self.lease_s / 4
        while not self._closing.wait(every):
            try:
                self._renew_all()
                for batch_id in self.store.batches.expired():
                    if self.store.batches.stop(batch_id, "expire"):
                        log.info("batch %s: its completion window has passed; finishing with what is done", batch_id)
            except Exception as exc:
                log.warning("renewing leases failed: %s", exc)

    def _renew_all(self) -> None:
        with self._lock:
            held = list(self._held.values())
        for entry in held:
            if self.store.tasks.renew(entry.task, self.lease_s):
                entry.renewed = time.monotonic()
            else:  # the lease ran out and another worker took the task
                entry.lost = True
            if entry.task.kind in (TaskKind.label, TaskKind.validate):
                batch = self.store.batches.get(entry.task.job_id)
                entry.stopped = batch is None or batch.stop_reason is not None
        for entry in held:  # a holder that could not renew for half a lease stops before anyone else may take it
            if time.monotonic() - entry.renewed > self.lease_s / 2:
                entry.lost = True
