"""SIGKILL `rlaif serve` in the middle of a bulk batch, start it again, and check that it finished the batch with
no label lost or written twice.

    .venv/bin/python benchmarks/bench_serve_restart.py                  # 96 pairs on the real judge, killed at ~1/3
    .venv/bin/python benchmarks/bench_serve_restart.py --pairs 24 --batch-size 4

The batch (one pair per request line, the pairs of bench_serve.py) goes in through the official `openai` client.
When the batch's judgments.jsonl holds at least --kill-after lines, the server's whole process group gets
SIGKILL (no shutdown code runs). The server is started again on the same folder and port; the figures are how
many pairs were judged before the kill, how long the restart took to answer /health, how long until the batch
completed, how many pairs were judged after the restart (only the ones missing, if the resume works), and the
checks: every request line exactly once in the output and error files, every pair judged exactly once
(judgments.jsonl keys), one dataset row per labeled pair. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import ROOT, Server, make_pair  # noqa: E402


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="smollm2-pairwise", help="pairwise judge (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=96, help="pairs in the batch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per chunk of the label stage (default: %(default)s)")
    parser.add_argument("--kill-after", type=int, help="SIGKILL once this many pairs are judged (default: a third)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve-restart")
    args = parser.parse_args()
    if not 1 <= args.pairs <= 10_000:
        parser.error("--pairs must be in 1..10000 (the test is bounded)")
    kill_after = args.kill_after or max(1, args.pairs // 3)
    from openai import OpenAI

    args.out.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    server = Server(args.out / f"service-{int(time.time())}", args.judge, key, access_log=False)
    server.extra = ["--batch-size", str(args.batch_size)]
    server.start()
    client = OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    lines = "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/judge/pairwise",
                                "body": {"pairs": [make_pair(5_000_000 + i)]}}) + "\n" for i in range(args.pairs))
    upload = client.files.create(file=("restart.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h")
    judgments = server.service_dir / "batches" / batch.id / "judgments.jsonl"
    started = time.monotonic()
    while len(_lines(judgments)) < kill_after:
        if time.monotonic() - started > 3600:
            server.stop()
            sys.exit("the batch did not reach --kill-after within an hour")
        time.sleep(0.1)
    server.kill()
    judged_before = len(_lines(judgments))
    restart = time.monotonic()
    server.start()
    restart_s = time.monotonic() - restart
    status_after_restart = client.batches.retrieve(batch.id).status
    while (done := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled"):
        time.sleep(0.5)
    finished_s = time.monotonic() - restart
    replies = [json.loads(x) for f in (done.output_file_id, done.error_file_id) if f
               for x in client.files.content(f).text.splitlines()]
    server.stop()
    keys = [json.loads(line)["key"] for line in _lines(judgments)]
    rows = [json.loads(line)["pair_id"] for line in _lines(judgments.parent / "preferences.jsonl")]
    custom_ids = sorted(r["custom_id"] for r in replies)
    report = {
        "judge": args.judge, "pairs": args.pairs, "batch_size": args.batch_size, "status": done.status,
        "judged_before_kill": judged_before, "status_after_restart": status_after_restart,
        "restart_to_health_s": round(restart_s, 1), "restart_to_completed_s": round(finished_s, 1),
        "judged_after_restart": len(keys) - judged_before, "request_counts": done.request_counts.model_dump(),
        "checks": {
            "every_request_once": custom_ids == sorted(f"r{i}" for i in range(args.pairs)),
            "every_pair_judged_once": len(keys) == len(set(keys)) == args.pairs,
            "one_row_per_labeled_pair": len(rows) == len(set(rows)) == done.request_counts.completed,
        },
    }
    print(json.dumps(report))
    print(f"killed after {judged_before}/{args.pairs} judged; restarted in {restart_s:.1f} s; completed "
          f"{finished_s:.1f} s after the restart, {report['judged_after_restart']} judged after it; checks "
          f"{report['checks']}", file=sys.stderr)
    if not all(report["checks"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
