"""One worker thread per engine, and the backends judges get from it.

Every engine call of the service goes through its engine's worker. Synchronous requests (judge, reward) wait
in one queue: the worker takes all of them at once (up to `max_requests`) into one engine call, so requests that
arrive while the engine is busy are micro-batched together. Bulk work (batches, audits) waits in another queue
and is fed to the engine a slice at a time, only when no synchronous request waits: synchronous work goes ahead
of bulk work and waits at most one slice.

A caller waits for its requests either blocking (`submit`: bulk jobs, which run in their own thread) or as an
asyncio future (`submit_async`: the synchronous routes, which drive a judge's steps on the event loop, so no
thread is held while a request waits for the engine). After a long engine call the worker waits a moment (a tenth
of that call, at most 50 ms) for the callers it just answered to send their next requests, so clients that run
in step are not split into a small call and a large one that alternate forever.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rlaif.backends.base import Backend, BackendStats, Completion, CompletionRequest
from rlaif.backends.pool import BackendPool
from rlaif.config.backend import BackendConfig
from rlaif.errors import BackendError
from rlaif.judging.base import Steps, T

__all__ = ["EngineWorker", "Engines", "QueuedBackend", "JobCancelled", "drive_async"]


class JobCancelled(Exception):
    """Raised into a bulk job's own thread when its job was cancelled: the stage stops at its next engine call."""


@dataclass
class _Ticket:
    requests: list[CompletionRequest]
    event: threading.Event | None = None
    """A blocking caller waits on this."""
    future: asyncio.Future | None = None
    """An async caller awaits this (settled on its loop, all of one engine call's at once)."""
    done_count: int = 0
    results: list[Completion] = field(default_factory=list)
    error: BaseException | None = None
    cancelled: Callable[[], bool] | None = None
    """A bulk job's stop flag, asked before each slice: a cancelled job stops within one slice, not one chunk."""


def _settle(tickets: list[_Ticket]) -> None:
    """On the event loop: hand one engine call's results to the coroutines awaiting them."""
    for ticket in tickets:
        future = ticket.future
        if future is None or future.cancelled():
            continue
        if ticket.error is not None:
            future.set_exception(ticket.error)
        else:
            future.set_result(ticket.results)


def _finish(tickets: list[_Ticket]) -> None:
    """Wake the callers of finished tickets: blocking ones each, async ones with one call per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Ticket]] = {}
    for ticket in tickets:
        if ticket.event is not None:
            ticket.event.set()
        elif ticket.future is not None:
            by_loop.setdefault(ticket.future.get_loop(), []).append(ticket)
    for loop, waiting in by_loop.items():
        loop.call_soon_threadsafe(_settle, waiting)


class EngineWorker:
    """The one thread that calls one backend; see the module docstring for the order of work."""

    def __init__(self, backend: Backend, max_requests: int = 256, bulk_slice: int = 32):
        self.backend, self.max_requests, self.bulk_slice = backend, max_requests, bulk_slice
        self._cond = threading.Condition()
        self._sync: deque[_Ticket] = deque()
        self._bulk: deque[_Ticket] = deque()
        self._closed = False
        self.calls = 0
        self.batched_requests = 0
        self._last_call_s = 0.0
        self._recent_sync: deque[int] = deque(maxlen=2)
        """Sizes of the last two synchronous calls: clients split into two groups alternate between them."""
        self._thread = threading.Thread(target=self._loop, name=f"engine-{backend.name}", daemon=True)
        self._thread.start()

    def queue_depth(self) -> dict[str, int]:
        with self._cond:
            return {"sync": sum(len(t.requests) for t in self._sync),
                    "bulk": sum(len(t.requests) - t.done_count for t in self._bulk)}

    def submit(self, requests: list[CompletionRequest], bulk: bool,
               cancelled: Callable[[], bool] | None = None) -> list[Completion]:
        """Queue the requests and block until their completions are in (in order); JobCancelled when `cancelled`
        says yes before one of their slices."""
        if not requests:
            return []
        event = threading.Event()
        ticket = _Ticket(list(requests), event=event, cancelled=cancelled)
        self._enqueue(ticket, bulk)
        event.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.results

    async def submit_async(self, requests: list[CompletionRequest]) -> list[Completion]:
        """Queue synchronous requests and await their completions without holding a thread."""
        if not requests:
            return []
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._enqueue(_Ticket(list(requests), future=future), bulk=False)
        return await future

    def _enqueue(self, ticket: _Ticket, bulk: bool) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("the service is shutting down")
            (self._bulk if bulk else self._sync).append(ticket)
            self._cond.notify()

    def _gather(self) -> None:
        """After a long call, wait briefly for as many sync requests as the last two calls had together (the caller
        holds the lock): clients that split into two groups, each sending while the other's call runs, are merged."""
        window = min(0.05, 0.1 * self._last_call_s)
        deadline = time.monotonic() + window
        wanted = min(sum(self._recent_sync), self.max_requests)
        while self._sync and sum(len(t.requests) for t in self._sync) < wanted and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _drop_cancelled(self) -> None:
        """Answer the cancelled bulk tickets at the head of the queue with JobCancelled (the caller holds the lock)."""
        while self._bulk and self._bulk[0].cancelled is not None and self._bulk[0].cancelled():
            ticket = self._bulk.popleft()
            ticket.error = JobCancelled()
            _finish([ticket])

    def _take(self) -> list[tuple[_Ticket, int, int]]:
        """(ticket, start, end) slices for the next engine call: every waiting sync ticket, else one bulk slice."""
        if self._sync:
            taken: list[tuple[_Ticket, int, int]] = []
            size = 0
            while self._sync and (not taken or size + len(self._sync[0].requests) <= self.max_requests):
                ticket = self._sync.popleft()
                taken.append((ticket, 0, len(ticket.requests)))
                size += len(ticket.requests)
            return taken
        ticket = self._bulk[0]
        start = ticket.done_count
        end = min(len(ticket.requests), start + self.bulk_slice)
        if end == len(ticket.requests):
            self._bulk.popleft()
        return [(ticket, start, end)]

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._sync or self._bulk or self._closed):
                    self._cond.wait()
                if self._closed and not (self._sync or self._bulk):
                    return
                self._gather()
                self._drop_cancelled()
                if not (self._sync or self._bulk):
                    continue
                sync = bool(self._sync)
                work = self._take()
            requests = [r for ticket, start, end in work for r in ticket.requests[start:end]]
            started = time.monotonic()
            try:
                results = self.backend.complete(requests)
                error = None
            except BaseException as exc:  # a whole-backend failure: every waiting caller gets it
                results, error = [], exc
            self._last_call_s = time.monotonic() - started
            if sync:
                self._recent_sync.append(len(requests))
            self.calls += 1
            self.batched_requests += len(requests)
            offset = 0
            finished = []
            for ticket, start, end in work:
                if error is not None:
                    ticket.error = error
                    with self._cond:
                        if ticket in self._bulk:
                            self._bulk.remove(ticket)
                    finished.append(ticket)
                    continue
                ticket.results.extend(results[offset: offset + end - start])
                offset += end - start
                ticket.done_count = end
                if end == len(ticket.requests):
                    finished.append(ticket)
            _finish(finished)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)


class QueuedBackend:
    """A Backend whose calls go through an engine's worker, as synchronous or bulk work.

    `cancelled` (bulk jobs) is asked before each call: when it says yes the call raises JobCancelled."""

    def __init__(self, worker: EngineWorker, bulk: bool, cancelled: Callable[[], bool] | None = None):
        self.worker, self.bulk, self.cancelled = worker, bulk, cancelled
        self.name, self.model = worker.backend.name, worker.backend.model

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        if self.cancelled is not None and self.cancelled():
            raise JobCancelled()
        return self.worker.submit(requests, self.bulk, self.cancelled)

    def stats(self) -> BackendStats:
        return self.worker.backend.stats()

    def close(self) -> None:
        """The engine belongs to the service, not to the caller."""


class Engines:
    """The service's engines: each distinct backend config opened once (BackendPool), each with its worker."""

    def __init__(self, max_requests: int = 256, bulk_slice: int = 32):
        self.pool = BackendPool()
        self.max_requests, self.bulk_slice = max_requests, bulk_slice
        self.workers: dict[str, EngineWorker] = {}
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def worker(self, config: BackendConfig) -> EngineWorker:
        key = config.model_dump_json()
        with self._lock:
            if key not in self.workers:
                self.workers[key] = EngineWorker(self.pool.get(config), self.max_requests, self.bulk_slice)
            return self.workers[key]

    def backends(self, bulk: bool, cancelled: Callable[[], bool] | None = None) -> _QueuedBackends:
        """A Backends for make_judge: each judge's engine through its worker, as sync or bulk work."""
        return _QueuedBackends(self, bulk, cancelled)

    def stats(self) -> BackendStats:
        return self.pool.stats()

    def queue_depth(self) -> dict[str, int]:
        total = {"sync": 0, "bulk": 0}
        for worker in self.workers.values():
            for kind, n in worker.queue_depth().items():
                total[kind] += n
        return total

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.pool.close()


class _QueuedBackends:
    def __init__(self, engines: Engines, bulk: bool, cancelled: Callable[[], bool] | None):
        self.engines, self.bulk, self.cancelled = engines, bulk, cancelled

    def get(self, config: BackendConfig) -> Backend:
        return QueuedBackend(self.engines.worker(config), self.bulk, self.cancelled)

    def stats(self) -> BackendStats:
        return self.engines.stats()


async def drive_async(steps: Steps[T]) -> T:
    """Drive a judge's steps on the event loop: requests for a service engine are awaited on its worker (no thread
    held while they wait); any other backend is called in a worker thread."""
    from starlette.concurrency import run_in_threadpool

    try:
        backend, requests = next(steps)
        while True:
            if isinstance(backend, QueuedBackend):
                completions = await backend.worker.submit_async(requests)
            else:
                completions = await run_in_threadpool(backend.complete, requests)
            backend, requests = steps.send(completions)
    except StopIteration as done:
        return done.value
