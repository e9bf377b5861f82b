"""The service's Prometheus metrics, in its own registry (so two services in one process do not collide): requests,
errors and latency by route, labels by route and outcome, and levels read when scraped (engine queues, the job
store's waiting and leased tasks, this worker's running tasks, jobs by state, engine calls and micro-batch sizes).
With several workers each answers /metrics for itself (the job store's figures are the same from every one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

__all__ = ["Metrics"]


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

    def watch(self, service: Any) -> None:
        self.registry.register(_Levels(service))


class _Levels:
    """Levels read when scraped: queue depths, jobs by state, engine calls and their micro-batch sizes."""

    def __init__(self, service: Any):
        self.service = service

    def describe(self) -> list:
        return []

    def collect(self):
        s = self.service
        depth = GaugeMetricFamily("rlaif_queue_depth", "Engine requests waiting, by kind (sync, bulk)", labels=["kind"])
        for kind, n in s.engines.queue_depth().items():
            depth.add_metric([kind], n)
        yield depth
        tasks = GaugeMetricFamily("rlaif_tasks", "Job tasks (chunks) waiting or leased, in the whole job store",
                                  labels=["state"])
        for state, n in sorted(s.store.tasks.waiting().items()):
            tasks.add_metric([state], n)
        yield tasks
        running = GaugeMetricFamily("rlaif_tasks_running", "Tasks this worker process is running now")
        running.add_metric([], s.scheduler.running())
        yield running
        jobs = GaugeMetricFamily("rlaif_jobs", "Jobs by kind and state", labels=["kind", "state"])
        for (kind, state), n in sorted(s.store.counts().items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        calls = GaugeMetricFamily("rlaif_engine_calls", "Engine calls made (each one micro-batch)", labels=["engine"])
        batched = GaugeMetricFamily("rlaif_engine_requests", "Requests sent to the engine in those calls", labels=["engine"])
        for worker in s.engines.workers.values():
            calls.add_metric([worker.backend.name], worker.calls)
            batched.add_metric([worker.backend.name], worker.batched_requests)
        yield calls
        yield batched
