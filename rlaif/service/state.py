"""The service's parts, made once per worker process at start and shared by the routes (`request.app.state.service`).

    store      the job store (SQLite or PostgreSQL), shared with every other worker
    files      uploads and outputs under the service directory (a path every worker sees)
    engines    this worker's engines, each behind its worker thread (synchronous requests first)
    catalogue  the judges: specs and identities, and the synchronous judges on the engines
    executor   how bulk chunks are judged (local, ray, fleet)
    offload    the child processes the bulk steps' own work runs in, so it never holds up the API
    scheduler  leases tasks from the store and hands them to the batch and audit work
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from rlaif.service.audits import AuditWork
from rlaif.service.batches import BatchWork
from rlaif.service.catalogue import Catalogue
from rlaif.service.engines import Engines
from rlaif.service.executors import Executor, make_executor
from rlaif.service.files import FileStore
from rlaif.service.metrics import Metrics
from rlaif.service.offload import Offload
from rlaif.service.records import TaskKind
from rlaif.service.scheduler import Scheduler
from rlaif.service.settings import KeyRing, ServiceSettings
from rlaif.service.store import JobStore

__all__ = ["Service"]

log = logging.getLogger("rlaif.service")


@dataclass
class Service:
    settings: ServiceSettings
    keys: KeyRing
    store: JobStore
    files: FileStore
    engines: Engines
    catalogue: Catalogue
    executor: Executor
    offload: Offload
    scheduler: Scheduler
    metrics: Metrics

    @classmethod
    def start(cls, settings: ServiceSettings, keys: KeyRing) -> Service:
        catalogue = Catalogue(settings.judges)  # a bad judge fails here, before any engine or store is opened
        store = JobStore.open(settings.store_url)
        engines = Engines(settings.max_engine_requests, settings.bulk_slice)
        try:
            files = FileStore(store, settings.service_dir)
            catalogue.open(engines)
            offload = Offload(engines)
            executor = make_executor(settings, offload, catalogue.identities)
            offload.warm(executor.slots)
        except BaseException:
            engines.close()
            store.close()
            raise
        metrics = Metrics()
        batches = BatchWork(settings, store, files, catalogue, executor, offload,
                            on_labels=lambda outcome, n: metrics.labels.labels("bulk", outcome).inc(n))
        audits = AuditWork(settings, store, files, catalogue, engines)
        work = {TaskKind.validate: batches, TaskKind.label: batches, TaskKind.finalize: batches, TaskKind.audit: audits}
        scheduler = Scheduler(store, work, settings.lease_s, executor.slots)  # type: ignore[arg-type]
        service = cls(settings, keys, store, files, engines, catalogue, executor, offload, scheduler, metrics)
        metrics.watch(service)
        # A thread that holds the interpreter lock keeps it up to the switch interval (5 ms by default) before the
        # event loop gets it back: the threads that feed bulk work to the engines would add that to a sync request.
        sys.setswitchinterval(0.001)
        scheduler.start()
        return service

    def close(self) -> None:
        self.scheduler.close()
        self.executor.close()
        self.offload.close()
        self.engines.close()
        self.store.close()
