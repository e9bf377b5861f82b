"""The CPU work of bulk tasks in child processes, so a worker's API never waits on it.

A worker process serves the API on its event loop and holds the engines. The Python work of a bulk task (checking a
batch's lines, the label stage's bookkeeping around each engine call, the chunk's reply lines, the finalize merge)
would hold the same interpreter lock, and a synchronous request would wait behind it. So each task slot of the
worker runs its steps in a child process of its own (started once, on first use; killed with the worker):

    worker (API, engines) <--pipe--> child: the step; its engine calls come back over the pipe as bulk work

A child asks the worker for engine calls (a slice of requests for a judge's engine, answered from the engine's bulk
queue, behind every synchronous request) and whether its task must stop, and tells it of a step's milestones while
the step goes on (`tell`: the Ray executor's chunk has left the cluster). Backends that need no engine here (a
fleet's OpenAI-compatible servers, Ray) are opened in the child itself.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from rlaif.backends.base import Backend, BackendStats, Completion, CompletionRequest
from rlaif.config.backend import BackendConfig
from rlaif.service.engines import Engines, EngineWorker, JobCancelled

__all__ = ["Offload", "Remote", "OffloadFailed"]

log = logging.getLogger("rlaif.service")

Stop = Callable[[], bool]


class OffloadFailed(RuntimeError):
    """The child process running a step died (killed, or out of memory): the step's task fails with this reason."""


# the child's side ------------------------------------------------------------------------------------------------
class Remote:
    """What a step in a child can ask of its worker: `stop()`, and `backends()` on the worker's engines."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def ask(self, kind: str, *payload: Any) -> Any:
        self.conn.send((kind, *payload))
        answer, value = self.conn.recv()
        if answer == "cancelled":
            raise JobCancelled()
        if answer == "error":
            raise value
        return value

    def stop(self) -> bool:
        return bool(self.ask("stop"))

    def tell(self, event: str, value: Any = None) -> None:
        """Tell the worker of a milestone of the step (its caller's `on_event(event, value)`); the step goes on."""
        self.ask("event", event, value)

    def backends(self) -> _RemoteBackends:
        return _RemoteBackends(self)


class _RemoteBackend:
    def __init__(self, remote: Remote, config: BackendConfig, name: str, model: str):
        self.remote, self.config, self.name, self.model = remote, config, name, model
        self._key = config.model_dump_json()

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        return self.remote.ask("complete", self._key, requests)

    def stats(self) -> BackendStats:
        return BackendStats()

    def close(self) -> None:
        """The engine belongs to the worker."""


class _RemoteBackends:
    def __init__(self, remote: Remote):
        self.remote = remote
        self._named: dict[str, tuple[str, str]] = {}

    def get(self, config: BackendConfig) -> Backend:
        key = config.model_dump_json()
        if key not in self._named:
            self._named[key] = self.remote.ask("name", key)
        name, model = self._named[key]
        return _RemoteBackend(self.remote, config, name, model)

    def stats(self) -> BackendStats:
        return BackendStats.model_validate(self.remote.ask("stats"))


def _config(key: str) -> BackendConfig:
    from pydantic import TypeAdapter

    return TypeAdapter(BackendConfig).validate_json(key)


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the thread that started it ends, which is the worker's spawner thread
    (it lives as long as the worker): so no step outlives its worker, even one killed by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the closed pipe stops the child at its next question instead
        pass


def _warm() -> None:
    """Import what every bulk step uses before the first step is sent (a second or two of a child's start)."""
    import rlaif.service.batch_input  # noqa: F401  (the steps' modules: checking lines, replies, merging)
    import rlaif.service.batch_output  # noqa: F401
    import rlaif.stages.label  # noqa: F401
    import rlaif.stages.merge  # noqa: F401
    from rlaif.store.datasets import pairwise_features

    pairwise_features()


def _child(conn: Connection) -> None:
    _die_with_parent()
    os.nice(10)  # bulk work is background work: the worker's API (and its engines) get the CPU first
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when its children stop
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    remote = Remote(conn)
    _warm()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args = message
        try:
            conn.send(("result", fn(remote, *args)))
        except JobCancelled:
            conn.send(("cancelled", None))
        except Exception as exc:  # the step's own failure: the worker fails its task with it
            try:
                conn.send(("raised", exc))
            except Exception:  # an exception that does not pickle: its words still do
                conn.send(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _told(on_event: Callable[[str, Any], None] | None, payload: list) -> tuple[str, Any]:
    if on_event is None:
        return "value", None
    try:
        on_event(*payload)
    except Exception as exc:  # the caller's handler failed: the step is told, and fails with it
        return "error", exc
    return "value", None


# the worker's side -----------------------------------------------------------------------------------------------
class _Child:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.process = ctx.Process(target=_child, args=(theirs,), name="rlaif-bulk", daemon=True)
        self.process.start()
        theirs.close()

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()


class Offload:
    """Child processes for the steps of bulk tasks: one per task running at once, started on first use, kept."""

    def __init__(self, engines: Engines):
        self.engines = engines
        self._idle: list[_Child] = []
        self._all: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self._workers: dict[str, EngineWorker] = {}
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="rlaif-offload")
        """Every child is started from this one long-lived thread (see _die_with_parent)."""

    def warm(self, count: int) -> None:
        """Start `count` children now, in the background: the first steps need not wait for their imports."""
        for _ in range(count):
            self._spawner.submit(self._add_idle)

    def call(self, fn: Callable[..., Any], *args: Any, stop: Stop,
             on_event: Callable[[str, Any], None] | None = None) -> Any:
        """`fn(remote, *args)` in a child process (fn and args must pickle: a module-level function and records);
        its result, or its exception raised here. JobCancelled when the step stopped because `stop()` said so.
        `on_event(event, value)` is called here, in this thread, for each `remote.tell` of the step."""
        return self._run(self._take(), fn, args, stop, on_event)

    def beside(self, fn: Callable[..., Any], *args: Any, stop: Stop) -> Future | None:
        """`fn(remote, *args)` in an idle child, from a thread of its own, while the caller goes on: its Future; None
        (and nothing started) when no child is idle now, so a step's side work never adds a process."""
        with self._lock:
            if self._closed or not self._idle:
                return None
            child = self._idle.pop()
        future: Future = Future()

        def run() -> None:
            try:
                future.set_result(self._run(child, fn, args, stop, None))
            except BaseException as exc:  # the caller gets it from the Future
                future.set_exception(exc)

        threading.Thread(target=run, name="rlaif-offload-beside", daemon=True).start()
        return future

    def _run(self, child: _Child, fn: Callable[..., Any], args: tuple, stop: Stop,
             on_event: Callable[[str, Any], None] | None) -> Any:
        healthy = True  # a step's own error or a stop leaves its child ready for the next step
        try:
            child.conn.send((fn, args))
            return self._serve(child.conn, stop, on_event)
        except (EOFError, OSError) as exc:
            healthy = False
            child.process.join(1.0)
            raise OffloadFailed(f"the process running {getattr(fn, '__name__', fn)} died "
                                f"(exit code {child.process.exitcode}); the task can be run again") from exc
        finally:
            self._give_back(child, healthy)

    def _serve(self, conn: Connection, stop: Stop, on_event: Callable[[str, Any], None] | None) -> Any:
        while True:
            kind, *payload = conn.recv()
            if kind == "result":
                return payload[0]
            if kind == "raised":
                raise payload[0]
            if kind == "cancelled":
                raise JobCancelled()
            if kind == "event":
                conn.send(_told(on_event, payload))
            else:
                conn.send(self._answer(kind, payload, stop))

    def _answer(self, kind: str, payload: list, stop: Stop) -> tuple[str, Any]:
        if kind == "stop":
            return "value", stop()
        if kind == "stats":
            return "value", self.engines.stats().model_dump()
        worker = self._workers.get(payload[0])
        if worker is None:
            worker = self._workers[payload[0]] = self.engines.worker(_config(payload[0]))
        if kind == "name":
            return "value", (worker.backend.name, worker.backend.model)
        if stop():
            return "cancelled", None
        try:
            return "value", worker.submit(payload[1], bulk=True, cancelled=stop)
        except JobCancelled:
            return "cancelled", None
        except Exception as exc:  # the engine's error goes to the step, which records it as the label stage does
            return "error", exc

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise JobCancelled()
            if self._idle:
                return self._idle.pop()
        child = self._spawner.submit(_Child).result()
        with self._lock:
            self._all.append(child)
        return child

    def _add_idle(self) -> None:
        child = _Child()
        with self._lock:
            self._all.append(child)
            self._idle.append(child)

    def _give_back(self, child: _Child, healthy: bool) -> None:
        with self._lock:
            if healthy and child.process.is_alive() and not self._closed:
                self._idle.append(child)
                return
            if child in self._all:
                self._all.remove(child)
        child.close(timeout=1.0)

    def children(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._all if c.process.pid is not None]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children, self._all, self._idle = list(self._all), [], []
        for child in children:
            child.close()
        self._spawner.shutdown(wait=False)
