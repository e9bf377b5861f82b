"""Bulk batches through `rlaif serve` on its scale-out floor, against `rlaif label` on the same runner (issue 21).

    .venv/bin/python benchmarks/bench_serve_scale.py                     # everything below, 100k pairs (about 15 min)
    .venv/bin/python benchmarks/bench_serve_scale.py --pairs 5000 --small 1000 --skip-real   # a smoke run

Every server runs on 127.0.0.1 with the instant `fake` judge unless named (its labels judge nothing: these are our
own costs), one pair per request line, pairs from bench_serve.py's generator (all distinct). Phases, one at a time:

  throughput  a batch of --pairs through the API (upload, create, poll until completed; timed from create to
              completed, so validation, every chunk and the finalize step count) for each floor: `local` (one worker),
              `ray` (--executor ray, 2 actors on a local Ray), `workers2` (--workers 2, local executors); then the same
              pairs through `rlaif label` on the same runner (local; --runner ray --ray-actors 2), timed as the whole
              command and as its label stage. Peak RSS of each server process (sampled every 0.2 s), at --small and
              at --pairs pairs: memory should be flat.
  latency     sync POST /v1/judge/pairwise (one pair) p50/p99 over --sync-requests sequential requests on an idle
              server, then again while a --pairs batch runs on it.
  fairness    two keys each submit --pairs/2 pairs at the same moment; each key's labels/s (its pairs over its own
              create-to-completed time).
  kill        --workers 2, a --small*5 batch, SIGKILL the worker that holds a chunk; when it completes: request lines
              answered (distinct custom ids over total), lines answered twice, dataset rows vs labeled pairs, pair ids
              twice.
  real        the embedded judge (smollm2-pairwise) through the `local` path, --real-pairs pairs, and `rlaif label` on
              the same pairs.

Prints one JSON object of figures on stdout; progress on stderr; servers' logs and run folders in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import bench_serve  # noqa: E402  (the pair generator and /proc readers)
import service_support  # noqa: E402  (the same server process the service tests start)

KEYS = {"alice": "alice-bench-key-0123456789", "bob": "bob-bench-key-0123456789ab"}
RLAIF = [sys.executable, "-m", "rlaif.cli"]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def batch_lines(path: Path, n: int, tag: str = "") -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"custom_id": f"{tag}{i}", "method": "POST", "url": "/v1/judge/pairwise",
                                 "body": {"pairs": [bench_serve.make_pair(i + (10**7 if tag else 0))]}}) + "\n")
    return path


class Peaks:
    """Peak VmRSS of each process under a server (sampled every 0.2 s), by pid."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb, self._stop = pid, Counter(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for p in bench_serve._descendants(self.pid):
                self.peak_kb[p] = max(self.peak_kb[p], bench_serve._status_kb(p, "VmRSS"))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {str(p): round(kb / 1024, 1) for p, kb in self.peak_kb.most_common() if kb > 50_000}


def server(out: Path, name: str, judge: str, extra: list[str]) -> service_support.Server:
    s = service_support.Server(out / name, [judge], KEYS, extra=extra, access_log=False)
    s.start(timeout=600)
    say(f"  {name}: ready in {s.start_s:.1f} s")
    return s


def client(s: service_support.Server, who: str = "alice"):
    from openai import OpenAI

    return OpenAI(base_url=s.url + "/v1", api_key=KEYS[who], max_retries=2, timeout=600)


def submit(s: service_support.Server, path: Path, who: str = "alice") -> tuple[str, float]:
    c = client(s, who)
    with path.open("rb") as fh:
        upload = c.files.create(file=(path.name, fh), purpose="batch")
    started = time.perf_counter()
    return c.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise", completion_window="24h").id, started


def wait(s: service_support.Server, batch_id: str, who: str = "alice", timeout: float = 3600) -> tuple[dict, float]:
    deadline = time.monotonic() + timeout
    while True:
        status, batch, _ = s.request("GET", f"/v1/batches/{batch_id}", who=who)
        if status == 200 and batch["status"] in ("completed", "failed", "cancelled", "expired"):  # type: ignore[index]
            return batch, time.perf_counter()  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise SystemExit(f"batch {batch_id} not done after {timeout} s: {batch}")
        time.sleep(0.25)


def run_batch(s: service_support.Server, path: Path, n: int) -> dict:
    batch_id, started = submit(s, path)
    batch, ended = wait(s, batch_id)
    seconds = ended - started
    return {"status": batch["status"], "pairs": n, "seconds": round(seconds, 1), "labels_per_s": round(n / seconds, 1),
            "completed": batch["request_counts"]["completed"]}


def cli_label(out: Path, pairs: Path, judge: str, runner: list[str]) -> dict:
    target = out / "runs" / f"label-{len(list((out / 'runs').glob('*'))) if (out / 'runs').is_dir() else 0}"
    started = time.perf_counter()
    done = subprocess.run([*RLAIF, "label", "--pairs", str(pairs), "--judge", judge, "--out", str(target), "--quiet",
                           "--batch-size", "64", *runner], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"rlaif label failed: {done.stderr[-2000:]}")
    manifest = json.loads((target / "manifest.json").read_text())
    counts = manifest.get("counts") or manifest.get("summary") or {}
    n = counts.get("labeled", 0) + counts.get("unlabeled", 0)
    label_s = counts.get("label_seconds") or seconds
    return {"pairs": n, "command_seconds": round(seconds, 1), "labels_per_s_command": round(n / seconds, 1),
            "label_seconds": label_s, "labels_per_s_stage": round(n / label_s, 1) if label_s else None}


def throughput(out: Path, judge: str, big: Path, small: Path, n: int, n_small: int, only: list[str] | None = None,
               ray_chunk: int | None = None) -> dict:
    # One local Ray cluster for the server and the CLI alike, with a CPU more than the 2 actors hold (on a 2-core
    # machine a Ray sized to the cores would give the actors every CPU and starve the read tasks).
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--num-cpus", "3",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True)
    os.environ["RAY_ADDRESS"] = "auto"
    floors = {"local": [], "ray": ["--executor", "ray", "--ray-actors", "2", "--chunk-pairs", str(ray_chunk or max(2048, n // 2))],
              "workers2": ["--workers", "2"]}
    floors = {name: extra for name, extra in floors.items() if not only or name in only}
    found: dict = {}
    for name, extra in floors.items():
        say(f"throughput: {name}")
        s = server(out, f"tp-{name}", judge, extra)
        try:
            peaks = Peaks(s.proc.pid)  # type: ignore[union-attr]
            found[name] = {"small": run_batch(s, small, n_small), "small_peak_rss_mb": peaks.stop()}
            peaks = Peaks(s.proc.pid)  # type: ignore[union-attr]
            found[name].update(big=run_batch(s, big, n), big_peak_rss_mb=peaks.stop())
        finally:
            s.stop()
        say(f"  {json.dumps(found[name])}")
    pairs = out / "pairs.jsonl"
    bench_serve.write_pairs(pairs, n)
    say("throughput: rlaif label (local, then ray with 2 actors)")
    if {"local", "workers2"} & set(floors):
        found["cli_local"] = cli_label(out, pairs, judge, [])
    if "ray" in floors:
        found["cli_ray"] = cli_label(out, pairs, judge, ["--runner", "ray", "--ray-actors", "2", "--ray-address", "auto"])
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)
    os.environ.pop("RAY_ADDRESS", None)
    for name, cli in (("local", "cli_local"), ("workers2", "cli_local"), ("ray", "cli_ray")):
        if name not in floors:
            continue
        api = found[name]["big"]["labels_per_s"]
        found[name]["vs_cli_command"] = round(api / found[cli]["labels_per_s_command"], 3)
        found[name]["vs_cli_stage"] = round(api / found[cli]["labels_per_s_stage"], 3) if found[cli]["labels_per_s_stage"] else None
    return found


def _sync_latencies(s: service_support.Server, count: int) -> list[float]:
    body = {"pairs": [bench_serve.make_pair(5 * 10**7)]}
    times = []
    for i in range(count):
        body["pairs"][0]["prompt"] = f"Latency probe {i}: name a colour."
        started = time.perf_counter()
        status, _, _ = s.request("POST", "/v1/judge/pairwise", body)
        times.append(time.perf_counter() - started)
        assert status == 200
    return times


def _pct(values: list[float], q: float) -> float:
    return round(1000 * sorted(values)[min(len(values) - 1, int(q * len(values)))], 2)


def latency(out: Path, judge: str, big: Path, count: int) -> dict:
    say("latency: idle, then during a batch")
    s = server(out, "latency", judge, [])
    try:
        idle = _sync_latencies(s, count)
        batch_id, _ = submit(s, big)
        time.sleep(2)
        busy = _sync_latencies(s, count)
        status, batch, _ = s.request("GET", f"/v1/batches/{batch_id}")
        running = batch["status"] in ("validating", "in_progress")  # type: ignore[index]
        wait(s, batch_id)
    finally:
        s.stop()
    found = {"idle_p50_ms": _pct(idle, 0.5), "idle_p99_ms": _pct(idle, 0.99), "busy_p50_ms": _pct(busy, 0.5),
             "busy_p99_ms": _pct(busy, 0.99), "batch_still_running_after": running}
    found["p99_ratio"] = round(found["busy_p99_ms"] / found["idle_p99_ms"], 2)
    say(f"  {json.dumps(found)}")
    return found


def fairness(out: Path, judge: str, n: int) -> dict:
    say("fairness: two keys at once")
    a, b = batch_lines(out / "fair-a.jsonl", n // 2, "a-"), batch_lines(out / "fair-b.jsonl", n // 2, "b-")
    s = server(out, "fair", judge, [])
    try:
        first, started_a = submit(s, a, "alice")
        second, started_b = submit(s, b, "bob")
        done: dict = {}
        threads = [threading.Thread(target=lambda k, i: done.__setitem__(k, wait(s, i, k)), args=(k, i))
                   for k, i in (("alice", first), ("bob", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        s.stop()
    rates = {"alice": (n // 2) / (done["alice"][1] - started_a), "bob": (n // 2) / (done["bob"][1] - started_b)}
    found = {k: round(v, 1) for k, v in rates.items()}
    found["ratio"] = round(max(rates.values()) / min(rates.values()), 3)
    say(f"  {json.dumps(found)}")
    return found


def kill(out: Path, judge: str, n: int) -> dict:
    say("kill: SIGKILL one of two workers mid-batch")
    path = batch_lines(out / "kill.jsonl", n)
    s = server(out, "kill", judge, ["--workers", "2", "--lease-s", "5", "--chunk-pairs", "512"])
    try:
        batch_id, _ = submit(s, path)
        store = out / "kill" / "service.sqlite"
        killed = None
        while killed is None:
            with sqlite3.connect(store) as db:
                held = db.execute("SELECT worker FROM tasks WHERE kind = 'label' AND state = 'leased'").fetchall()
            if held:
                killed = int(held[0][0].rsplit(":", 1)[1])
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        batch, _ = wait(s, batch_id)
        lines = []
        for key in ("output_file_id", "error_file_id"):
            if batch[key]:
                _, text, _ = s.request("GET", f"/v1/files/{batch[key]}/content")
                lines += [json.loads(x) for x in str(text).splitlines() if x.strip()]
        _, prefs, _ = s.request("GET", f"/v1/batches/{batch_id}/preferences.jsonl")
        rows = [json.loads(x) for x in str(prefs).splitlines() if x.strip()]
        with sqlite3.connect(store) as db:
            releases = db.execute("SELECT COUNT(*) FROM tasks WHERE attempts > 1").fetchone()[0]
    finally:
        s.stop()
    ids = Counter(line["custom_id"] for line in lines)
    labeled = sum(1 for line in lines for r in (line["response"]["body"] or {}).get("results", [])
                  if r["label"] in ("response_1", "response_2"))
    found = {"status": batch["status"], "lines": n, "answered": len(ids), "lost": n - len(ids),
             "answered_twice": sum(1 for v in ids.values() if v > 1), "labeled_pairs": labeled, "dataset_rows": len(rows),
             "pair_ids_twice": sum(1 for v in Counter(r["pair_id"] for r in rows).values() if v > 1),
             "chunks_leased_again": releases, "killed_pid": killed}
    say(f"  {json.dumps(found)}")
    return found


def real(out: Path, n: int) -> dict:
    say("real: the embedded judge through the local path")
    path = batch_lines(out / "real.jsonl", n)
    s = server(out, "real", "smollm2-pairwise", [])
    try:
        result = run_batch(s, path, n)
    finally:
        s.stop()
    pairs = out / "real-pairs.jsonl"
    bench_serve.write_pairs(pairs, n)
    found = {"api": result, "cli": cli_label(out, pairs, "smollm2-pairwise", [])}
    say(f"  {json.dumps(found)}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller batch of the memory check")
    parser.add_argument("--sync-requests", type=int, default=1000)
    parser.add_argument("--real-pairs", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-serve-scale"))
    parser.add_argument("--only", nargs="*", choices=("throughput", "latency", "fairness", "kill", "real"))
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--ray-chunk", type=int, help="throughput: --chunk-pairs of the ray floor (default: --pairs / 2)")
    parser.add_argument("--floors", nargs="*", choices=("local", "ray", "workers2"),
                        help="throughput: only these floors (and the CLI runs they compare with)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    judge = str(service_support.fake_judge(args.out))
    big = batch_lines(args.out / "big.jsonl", args.pairs)
    small = batch_lines(args.out / "small.jsonl", args.small)
    wanted = set(args.only or ("throughput", "latency", "fairness", "kill", "real"))
    if args.skip_real:
        wanted.discard("real")
    figures: dict = {"pairs": args.pairs, "small": args.small, "cpus": os.cpu_count()}
    if "throughput" in wanted:
        figures["throughput"] = throughput(args.out, judge, big, small, args.pairs, args.small, args.floors, args.ray_chunk)
    if "latency" in wanted:
        figures["latency"] = latency(args.out, judge, big, args.sync_requests)
    if "fairness" in wanted:
        figures["fairness"] = fairness(args.out, judge, args.pairs)
    if "kill" in wanted:
        figures["kill"] = kill(args.out, judge, args.small * 5)
    if "real" in wanted:
        figures["real"] = real(args.out, args.real_pairs)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
