"""`rlaif serve`: the judge, reward and bulk-labeling service (rlaif.service) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rlaif.cli.common import out_folder, positive_int

__all__ = ["add_parsers"]


def cmd_serve(args: argparse.Namespace) -> int:
    from rlaif.errors import ConfigError
    from rlaif.service.settings import KEYS_ENV, KeyRing, ServiceSettings, is_loopback, load_keys

    keys = load_keys(args.keys_file)
    if not keys and not is_loopback(args.host):
        raise ConfigError(f"refusing to serve on {args.host} without API keys: anyone who can reach it could use the "
                          f"judges and read every job; set {KEYS_ENV}=name:KEY or --keys-file, or bind 127.0.0.1")
    judges = [name for group in args.judge for name in group.split(",") if name] if args.judge else None
    settings = ServiceSettings(**{k: v for k, v in dict(
        judges=judges, service_dir=args.out, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
        max_file_bytes=args.max_file_bytes, max_items=args.max_items, max_jobs_per_key=args.max_jobs_per_key,
        batch_size=args.batch_size).items() if v is not None})
    import uvicorn

    from rlaif.service.app import create_app

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    service_log = logging.getLogger("rlaif.service")
    service_log.addHandler(handler)
    service_log.setLevel(logging.INFO if not args.quiet else logging.WARNING)
    service_log.propagate = False
    if not args.access_log:
        logging.getLogger("rlaif.service.access").setLevel(logging.WARNING)
    print(f"rlaif serve: starting {', '.join(settings.judges)} on http://{settings.host}:{settings.port} "
          f"({'keys: ' + ', '.join(keys) if keys else 'no keys: loopback only'}; jobs in {settings.service_dir}; "
          "API docs at /docs)", file=sys.stderr, flush=True)
    from rlaif.service.state import Service

    ring = KeyRing(keys)
    service = Service.start(settings, ring)  # engines open before the port does: a bad judge is a one-line error
    try:
        # No proxy headers: a client's X-Forwarded-For is not trusted (put a proxy in front and log there instead).
        uvicorn.run(create_app(settings, ring, service), host=settings.host, port=settings.port, log_level="warning",
                    access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=5)
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
    p.set_defaults(func=cmd_serve)
