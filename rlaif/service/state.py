"""The service's parts, made once at start and shared by the routes (`request.app.state.service`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from rlaif.service.catalogue import Catalogue
from rlaif.service.db import ServiceDB
from rlaif.service.engines import Engines
from rlaif.service.files import FileStore
from rlaif.service.jobs import JobRunner
from rlaif.service.settings import KeyRing, ServiceSettings

__all__ = ["Service", "Metrics"]

log = logging.getLogger("rlaif.service")


class Metrics:
    """Prometheus metrics in the service's own registry (so two services in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.labels = Counter("rlaif_labels", "Pairs judged, by route and outcome (labeled, tie, unlabeled)",
                              ["route", "outcome"], registry=self.registry)
        self.requests = Counter("rlaif_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.errors = Counter("rlaif_http_errors", "HTTP replies with status >= 400, by route and status",
                              ["route", "status"], registry=self.registry)
        self.latency = Histogram("rlaif_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                 registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(route, code).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, code).inc()

    def watch(self, service: Service) -> None:
        self.registry.register(_Levels(service))


class _Levels:
    """Levels read when scraped: queue depths, jobs by state, engine calls and their micro-batch sizes."""

    def __init__(self, service: Service):
        self.service = service

    def describe(self) -> list:
        return []

    def collect(self):
        s = self.service
        depth = GaugeMetricFamily("rlaif_queue_depth", "Engine requests waiting, by kind (sync, bulk)", labels=["kind"])
        for kind, n in s.engines.queue_depth().items():
            depth.add_metric([kind], n)
        yield depth
        jobs_waiting = GaugeMetricFamily("rlaif_jobs_queued", "Bulk jobs queued or running in this process")
        jobs_waiting.add_metric([], s.runner.depth())
        yield jobs_waiting
        jobs = GaugeMetricFamily("rlaif_jobs", "Jobs by kind and state", labels=["kind", "state"])
        for (kind, state), n in sorted(s.db.counts().items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        calls = GaugeMetricFamily("rlaif_engine_calls", "Engine calls made (each one micro-batch)", labels=["engine"])
        batched = GaugeMetricFamily("rlaif_engine_requests", "Requests sent to the engine in those calls", labels=["engine"])
        for worker in s.engines.workers.values():
            calls.add_metric([worker.backend.name], worker.calls)
            batched.add_metric([worker.backend.name], worker.batched_requests)
        yield calls
        yield batched


@dataclass
class Service:
    settings: ServiceSettings
    keys: KeyRing
    db: ServiceDB
    files: FileStore
    engines: Engines
    catalogue: Catalogue
    runner: JobRunner
    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: ServiceSettings, keys: KeyRing) -> Service:
        settings.service_dir.mkdir(parents=True, exist_ok=True)
        db = ServiceDB(settings.service_dir / "service.sqlite")
        files = FileStore(db, settings.service_dir)
        engines = Engines(settings.max_engine_requests, settings.bulk_slice)
        try:
            catalogue = Catalogue(settings.judges, engines)
        except BaseException:
            engines.close()
            db.close()
            raise
        metrics = Metrics()
        runner = JobRunner(settings, db, engines, catalogue, files,
                           on_labels=lambda outcome, n: metrics.labels.labels("bulk", outcome).inc(n))
        service = cls(settings, keys, db, files, engines, catalogue, runner, metrics)
        metrics.watch(service)
        runner.start()
        return service

    def close(self) -> None:
        self.runner.stop()
        self.engines.close()
        self.db.close()
