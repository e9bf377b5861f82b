"""How a bulk chunk is judged: the same runners `rlaif label` uses, chosen by `rlaif serve --executor`.

    local  the label stage on this worker's engines, through the engine worker, so synchronous requests go
           ahead of bulk slices (`rlaif label`, the default runner)
    ray    the Ray Data runner (`rlaif label --runner ray`): judge actors on a Ray cluster joined by address, or on a
           local Ray started for this worker and sized to its CPUs
    fleet  the label stage on the judge's own OpenAI-compatible backend (its `base_urls` fleet, with failover), called
           directly so several chunks are in flight at once (`rlaif label` with a fleet judge)

Every executor writes a label-stage run folder for its chunk, so a chunk whose worker died resumes from what that
worker recorded. Pointwise chunks are scored on this worker's engines (or the fleet) with the score stage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rlaif.backends.base import Backend, BackendStats
from rlaif.backends.pool import BackendPool
from rlaif.config.backend import BackendConfig
from rlaif.config.judge import JudgeSpec
from rlaif.errors import ConfigError
from rlaif.judging.identity import JudgeIdentity
from rlaif.judging.pointwise import ScoreItem
from rlaif.records import CandidatePair
from rlaif.service.engines import JobCancelled
from rlaif.service.offload import Offload, Remote
from rlaif.service.settings import ServiceSettings
from rlaif.stages.label import LabelOptions, label_stage
from rlaif.stages.ray_cluster import connect, forget_owner
from rlaif.store.inputs import iter_input
from rlaif.store.runfolder import RunFolder

__all__ = ["Executor", "LocalExecutor", "FleetExecutor", "RayExecutor", "make_executor"]

log = logging.getLogger("rlaif.service")

Stop = Callable[[], bool]


class Executor(Protocol):
    name: str
    slots: int
    """Chunks one worker runs at once."""

    def label(self, spec: JudgeSpec, pairs: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        """Label the chunk's pairs into `run` (resuming what is there); the label stage's summary."""
        ...

    def score(self, spec: JudgeSpec, items: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        """Score the chunk's items into `run` (resuming what is there)."""
        ...

    def close(self) -> None: ...


def _label(spec: JudgeSpec, pairs: Path, run: RunFolder, backends: Any, batch_size: int) -> dict[str, Any]:
    return label_stage(iter_input(pairs, CandidatePair), spec, backends, run, batch_size, progress=False,
                       options=LabelOptions(source=f"{run.path.parent.parent.name} chunk {run.path.name}"))


def _score(spec: JudgeSpec, items: Path, run: RunFolder, backends: Any, batch_size: int) -> dict[str, Any]:
    from rlaif.judging.factory import make_judge
    from rlaif.stages.score import score_items

    chunk = [item for _, item in iter_input(items, ScoreItem) if isinstance(item, ScoreItem)]
    judge = make_judge(spec, backends, "pointwise", "a pointwise batch")
    result = score_items(chunk, judge, run, batch_size, progress=False)
    return {"items": len(chunk), "scored_now": result.scored_now, "reused": result.reused}


class LocalExecutor:
    """Chunks on this worker's engines (shared with the synchronous routes, which go first); the label stage runs in
    a child process (rlaif.service.offload) whose engine calls come back to the engines here."""

    name = "local"

    def __init__(self, offload: Offload, settings: ServiceSettings):
        self.offload, self.batch_size = offload, settings.batch_size
        self.slots = settings.slots or 2

    def label(self, spec: JudgeSpec, pairs: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        return self.offload.call(_on_engines, _label, spec, pairs, run.path, self.batch_size, stop=stop)

    def score(self, spec: JudgeSpec, items: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        return self.offload.call(_on_engines, _score, spec, items, run.path, self.batch_size, stop=stop)

    def close(self) -> None:
        """The engines and the child processes belong to the service."""


def _on_engines(remote: Remote, step: Callable[..., dict[str, Any]], spec: JudgeSpec, path: Path, run: Path,
                batch_size: int) -> dict[str, Any]:
    """In the child: the step on the worker's engines."""
    return step(spec, path, RunFolder(run), remote.backends(), batch_size)


def _on_fleet(remote: Remote, step: Callable[..., dict[str, Any]], spec: JudgeSpec, path: Path, run: Path,
              batch_size: int) -> dict[str, Any]:
    """In the child: the step on the judge's own OpenAI-compatible servers (a client pool of the child's own)."""
    with BackendPool() as pool:
        return step(spec, path, RunFolder(run), _StoppablePool(pool, remote.stop), batch_size)


class _Stoppable:
    """A backend whose calls first ask the chunk's stop flag."""

    def __init__(self, backend: Backend, stop: Stop):
        self.backend, self.stop = backend, stop
        self.name, self.model = backend.name, backend.model

    def complete(self, requests: list) -> list:
        if self.stop():
            raise JobCancelled()
        return self.backend.complete(requests)

    def stats(self) -> BackendStats:
        return self.backend.stats()

    def close(self) -> None:
        """The pool closes the backend."""


class _StoppablePool:
    def __init__(self, pool: BackendPool, stop: Stop):
        self.pool, self.stop = pool, stop

    def get(self, config: BackendConfig) -> Backend:
        return _Stoppable(self.pool.get(config), self.stop)

    def stats(self) -> BackendStats:
        return self.pool.stats()


def _fleet_judges(identities: dict[str, JudgeIdentity]) -> None:
    for name, identity in identities.items():
        kinds = {single.backend for single in identity.singles}
        if kinds != {"openai"}:
            raise ConfigError(f"--executor fleet sends bulk work to each judge's OpenAI-compatible servers, but judge {name} "
                              f"runs on {', '.join(sorted(kinds))}: serve judges with `backend.kind: openai` and `base_urls` "
                              "(e.g. smollm2-pairwise-fleet), or use --executor local")


class FleetExecutor:
    """Chunks on the judges' own OpenAI-compatible servers, several at once; each chunk opens its own client pool
    (failover across `base_urls`, retries and budgets as in `rlaif label`)."""

    name = "fleet"

    def __init__(self, offload: Offload, settings: ServiceSettings, identities: dict[str, JudgeIdentity]):
        _fleet_judges(identities)
        self.offload, self.batch_size = offload, settings.batch_size
        self.slots = settings.slots or 4

    def label(self, spec: JudgeSpec, pairs: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        return self.offload.call(_on_fleet, _label, spec, pairs, run.path, self.batch_size, stop=stop)

    def score(self, spec: JudgeSpec, items: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        return self.offload.call(_on_fleet, _score, spec, items, run.path, self.batch_size, stop=stop)

    def close(self) -> None:
        """Nothing stays open between chunks."""


def _on_ray(remote: Remote, spec: JudgeSpec, pairs: Path, run: Path, batch_size: int, actors: int, gpus: float,
            address: str) -> dict[str, Any]:
    """In the child: the chunk on Ray Data, this child a driver of the worker's Ray (joined once, kept)."""
    import ray

    from rlaif.stages.ray_label import ray_label_stage

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray_label_stage(pairs, spec, RunFolder(run), batch_size, actors=actors, gpus_per_actor=gpus,
                           progress=False, after_ray=lambda: remote.tell(RAY_DONE))


RAY_DONE = "ray_done"
"""The event a chunk's Ray driver tells when its run on the cluster is over (its output pass is still to come)."""


class RayExecutor:
    """Pairwise chunks on Ray Data (the Ray runner of `rlaif label`); pointwise chunks on this worker's engines. A
    chunk on Ray runs to its end once started: a cancel takes effect at the next chunk (size chunks with
    --chunk-pairs). One chunk is on the cluster at a time per worker; the next one starts as soon as the cluster's
    part of the one before is over, while that one's output pass and reply lines are written (in other slots)."""

    name = "ray"

    def __init__(self, offload: Offload, settings: ServiceSettings):
        import ray

        self.settings, self.local = settings, LocalExecutor(offload, settings)
        self.slots = settings.slots or 2
        self._cluster = threading.Lock()
        """Each chunk on Ray takes the actors it asks for: one chunk on the cluster at a time per worker, held from
        its start until the cluster's part ends (RAY_DONE), while the chunk before it finishes in another slot."""
        # Joined where an address is given (or RAY_ADDRESS); else a local Ray of this worker's own, with the machine's
        # CPUs and at least one more than the actors (rlaif.stages.ray_cluster.connect), stopped on close, and
        # stopped by the next start if this worker is killed before it can.
        self.started_here, self.started_local = connect(settings.ray_address, None, settings.ray_actors)
        self.offload, self.address = offload, ray.get_runtime_context().gcs_address
        """The chunk's Ray driver runs in a child process (the driver's own work stays off the API), joining here."""
        log.info("bulk chunks on Ray %s (%s actors per chunk)", ray.__version__, settings.ray_actors)

    def label(self, spec: JudgeSpec, pairs: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        if stop():
            raise JobCancelled()
        s = self.settings
        held = [self._cluster.acquire()]

        def on_event(event: str, value: Any) -> None:
            if event == RAY_DONE and held:
                held.pop()
                self._cluster.release()

        try:
            if stop():
                raise JobCancelled()
            return self.offload.call(_on_ray, spec, pairs, run.path, s.batch_size, s.ray_actors, s.ray_gpus_per_actor,
                                     self.address, stop=stop, on_event=on_event)
        finally:
            on_event(RAY_DONE, None)

    def score(self, spec: JudgeSpec, items: Path, run: RunFolder, stop: Stop) -> dict[str, Any]:
        return self.local.score(spec, items, run, stop)

    def close(self) -> None:
        if self.started_local:
            forget_owner()
        if self.started_here:
            import ray

            ray.shutdown()


def make_executor(settings: ServiceSettings, offload: Offload, identities: dict[str, JudgeIdentity]) -> Executor:
    if settings.executor == "ray":
        return RayExecutor(offload, settings)
    if settings.executor == "fleet":
        return FleetExecutor(offload, settings, identities)
    return LocalExecutor(offload, settings)
