"""`rlaif serve`: the judge, reward and bulk-labeling service (rlaif.service) on uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from rlaif.cli.common import out_folder, positive_int

__all__ = ["add_parsers"]


def _settings(args: argparse.Namespace):
    from rlaif.service.settings import ServiceSettings

    judges = [name for group in args.judge for name in group.split(",") if name] if args.judge else None
    given = dict(judges=judges, service_dir=args.out, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                 max_file_bytes=args.max_file_bytes, max_items=args.max_items, max_jobs_per_key=args.max_jobs_per_key,
                 batch_size=args.batch_size, store=args.store, executor=args.executor, workers=args.workers,
                 chunk_pairs=args.chunk_pairs, lease_s=args.lease_s, slots=args.slots, ray_address=args.ray_address,
                 ray_actors=args.ray_actors, ray_gpus_per_actor=args.ray_gpus_per_actor, reward_scale=args.reward_scale)
    return ServiceSettings(**{k: v for k, v in given.items() if v is not None})


def _logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    service_log = logging.getLogger("rlaif.service")
    service_log.addHandler(handler)
    service_log.setLevel(logging.INFO if not args.quiet else logging.WARNING)
    service_log.propagate = False
    if not args.access_log:
        logging.getLogger("rlaif.service.access").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    from rlaif.errors import ConfigError
    from rlaif.service.settings import KEYS_ENV, KeyRing, is_loopback, load_keys

    keys = load_keys(args.keys_file)
    if not keys and not is_loopback(args.host):
        raise ConfigError(f"refusing to serve on {args.host} without API keys: anyone who can reach it could use the "
                          f"judges and read every job; set {KEYS_ENV}=name:KEY or --keys-file, or bind 127.0.0.1")
    settings = _settings(args)
    import uvicorn

    from rlaif.service.app import SETTINGS_ENV, create_app
    from rlaif.service.catalogue import Catalogue
    from rlaif.service.store import JobStore

    Catalogue(settings.judges)  # a bad judge, or a store that cannot be opened, is a one-line error before any engine
    JobStore.open(settings.store_url).close()
    _logging(args)
    where = settings.store if settings.store else f"{settings.service_dir}/service.sqlite"
    print(f"rlaif serve: starting {', '.join(settings.judges)} on http://{settings.host}:{settings.port} "
          f"({'keys: ' + ', '.join(keys) if keys else 'no keys: loopback only'}; {settings.workers} worker(s), bulk on "
          f"{settings.executor}; jobs in {where}, files in {settings.service_dir}; API docs at /docs)",
          file=sys.stderr, flush=True)
    os.umask(0o077)  # every file the service (its workers, their child processes, the stages) writes is its user's only
    # No proxy headers: a client's X-Forwarded-For is not trusted (put a proxy in front and log there instead).
    options = dict(host=settings.host, port=settings.port, log_level="warning", access_log=False, proxy_headers=False,
                   server_header=False, timeout_graceful_shutdown=5)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = json.dumps({**settings.model_dump(mode="json"), "keys_file": args.keys_file})
        uvicorn.run("rlaif.service.app:app_from_environment", factory=True, workers=settings.workers, **options)
        return 0
    from rlaif.service.state import Service

    ring = KeyRing(keys)
    service = Service.start(settings, ring)  # engines open before the port does: a bad judge is a one-line error
    try:
        uvicorn.run(create_app(settings, ring, service), **options)
    finally:
        service.close()
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve", parents=[shared], help="serve judges, rewards, bulk labeling jobs and the labeling page over HTTP",
        description="Start the rlaif service: synchronous judging (/v1/judge/pairwise, /v1/judge/pointwise), rewards "
                    "(/v1/reward, and /get_reward in OpenRLHF's shape), bulk jobs as a subset of OpenAI's Batch API "
                    "(/v1/files, /v1/batches), audits (/v1/audits), labeling campaigns with a browser page, and "
                    "Prometheus /metrics. Jobs live in SQLite and run folders under --dir and survive a restart. "
                    "API keys: RLAIF_API_KEYS=name:KEY[,name2:KEY2] or --keys-file (one `name: KEY` per line); without "
                    "keys it serves only on a loopback address. API docs at http://HOST:PORT/docs.")
    p.add_argument("--judge", action="append", metavar="NAME",
                   help="a judge of the catalogue (name or YAML path); repeat or comma-separate for several "
                        "(default: smollm2-pairwise and smollm2-pointwise)")
    p.add_argument("--dir", dest="out", type=out_folder, default=Path("runs/service"),
                   help="service folder: the job database, uploads, batch and audit run folders (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; others need API keys)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--keys-file", help="API keys, one `name: KEY` per line (adds to RLAIF_API_KEYS)")
    p.add_argument("--max-items", type=positive_int, help="most pairs/items/completions per synchronous request (default: 64)")
    p.add_argument("--max-body-bytes", type=positive_int, help="largest synchronous request body (default: 1 MiB)")
    p.add_argument("--max-file-bytes", type=positive_int, help="largest upload to /v1/files (default: 1 GiB)")
    p.add_argument("--max-jobs-per-key", type=positive_int, help="batches and audits one key may have queued or running (default: 4)")
    p.add_argument("--batch-size", type=positive_int, help="pairs per bulk chunk written to the run folder (default: 64)")
    p.add_argument("--access-log", action="store_true", help="log one line per request (route, status, time, key name)")
    scale = p.add_argument_group("scale-out: workers, the shared job store and the bulk executor")
    scale.add_argument("--workers", type=positive_int, help="worker processes on this host, each serving the API and "
                                                               "taking bulk chunks (default: 1); more hosts: start "
                                                               "`rlaif serve` on each with the same --store and --dir")
    scale.add_argument("--store", metavar="URL", help="the job store every worker shares: a postgresql:// URL for "
                                                      "workers on several hosts (default: DIR/service.sqlite, SQLite "
                                                      "in WAL mode, workers on one host)")
    scale.add_argument("--executor", choices=("local", "ray", "fleet"), help="how bulk chunks are judged: local (this "
                       "worker's engines, default), ray (the Ray Data runner of `rlaif label --runner ray`), fleet "
                       "(each judge's own OpenAI-compatible servers, several chunks at once)")
    scale.add_argument("--chunk-pairs", type=positive_int, help="pairs per chunk: the unit a worker leases, shares "
                                                                "fairly between keys and resumes (default: 2048)")
    scale.add_argument("--lease-s", type=float, help="seconds a chunk's lease lasts without renewal: a dead worker's "
                                                     "chunks go to another after this (default: 30)")
    scale.add_argument("--slots", type=positive_int, help="chunks one worker runs at once (default: local 2, fleet 4, ray 2)")
    scale.add_argument("--ray-address", help="--executor ray: the cluster (`auto`, `ray://HOST:10001`; default "
                                             "RAY_ADDRESS, else a local Ray sized to this machine's CPUs)")
    scale.add_argument("--ray-actors", type=positive_int, help="--executor ray: judge actors per chunk (default: 1)")
    scale.add_argument("--ray-gpus-per-actor", type=float, help="--executor ray: GPUs per actor (default: 0)")
    p.add_argument("--reward-scale", choices=("raw", "unit"), help="pointwise rewards on the judge's rubric scale "
                   "(raw, e.g. 1-9: the default) or mapped to 0-1 (unit)")
    p.set_defaults(func=cmd_serve)
