"""`rlaif serve`: the judge, reward and bulk-labeling service over HTTP (FastAPI), with durable jobs.

    settings   what the service is started with: judges, folder, bind, keys, caps
    db         job, file and campaign metadata in SQLite (WAL), outputs in run folders beside it
    engines    one worker per engine: concurrent synchronous requests micro-batched into one engine call,
               ahead of bulk work
    jobs       bulk batches (OpenAI Batch API subset) and audits, run one at a time, resumed after a restart
    campaigns  the calibration sample people label in a browser
    app        the routes

Only `rlaif.cli` sits above this layer; nothing below imports it.
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
