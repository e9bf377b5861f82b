"""`rlaif serve`: the judge, reward and bulk-labeling service over HTTP (FastAPI), on workers that share a job store.

    app, routes/   the app and one router per resource; guards.py the middleware, http.py what routes share
    records, store the typed jobs and the job store (SQLite WAL or PostgreSQL, database.py) with leasable tasks
    scheduler      leases tasks round-robin across keys, renews leases, stops cancelled and expired work
    batches        a batch's tasks (batch_input.py, batch_output.py); audits.py an audit's task
    executors      how a bulk chunk is judged: local engines, Ray Data, or an OpenAI-compatible fleet
    engines        one thread per engine: synchronous requests micro-batched, ahead of bulk slices
    catalogue      the judges; labeling_page.py and campaign_data.py the calibration sample people label

Only `rlaif.cli` sits above this layer; nothing below imports it. docs/architecture.md draws the floor.
"""

from __future__ import annotations

__all__ = ["create_app", "ServiceSettings"]


def __getattr__(name: str):
    if name == "create_app":
        from rlaif.service.app import create_app

        return create_app
    if name == "ServiceSettings":
        from rlaif.service.settings import ServiceSettings

        return ServiceSettings
    raise AttributeError(name)
