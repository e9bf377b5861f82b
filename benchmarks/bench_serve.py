"""A bounded load test of `rlaif serve` on loopback: concurrent clients sending one pair per request.

    .venv/bin/python benchmarks/bench_serve.py                       # the measurement: 32 clients x 60 s, both backends
    .venv/bin/python benchmarks/bench_serve.py --seconds 5 --instant-seconds 5 --bulk-pairs 16   # a smoke run
    .venv/bin/python benchmarks/bench_serve.py --skip-real --skip-bulk --instant-seconds 10      # our own overhead only

Three phases, one after the other (never two at once: they share the machine's cores):
  1. real: `rlaif serve --judge JUDGE` (the in-process vLLM engine) on 127.0.0.1; a few warm-up requests; then
     --clients threads, each on its own keep-alive connection, POST /v1/judge/pairwise with one pair per request
     in a loop until --seconds have passed (or --max-requests were sent); requests in flight then finish. Figures:
     requests/s and labels/s (over the wall time from the first request to the last reply), p50/p99/max latency,
     HTTP errors (a non-200 reply or a broken connection) apart from unlabeled results (200 with a null label),
     the server's peak RSS (VmHWM of the server process, and the peak of the sampled RSS of it and its children),
     the mean micro-batch (engine requests per engine call, from /metrics, warm-up excluded; a pair is 2 engine
     requests, both orders), and the CPU seconds the server and the clients used during the load. On the real
     model one engine call of 32 pairs takes about a minute on 2 cores, so a short window is mostly the last
     calls draining: give --seconds a few minutes for steadier figures.
  2. bulk: `rlaif label` on --bulk-pairs pairs from the same generator (other pairs, the same distribution), its
     labels_per_second (pairs judged / label-stage seconds, engine start excluded) from the manifest; the ratio
     served pairs judged/s over it (target >= 0.8).
  3. instant: phase 1 again with the same judge on the instant `fake` backend (its labels judge nothing): what
     our own HTTP, validation, rendering, micro-batching and JSON cost (target >= 1,000 pairs/s on 2 cores).

Every pair is distinct (nothing can be answered from a cache by content), a short prompt and two answers of a
sentence or two. The clients use a minimal HTTP/1.1 client on raw sockets (one prebuilt header, no header
parsing beyond the status line and Content-Length) to take as little CPU as possible, but they run on the same
cores as the server: the figures are those of a server sharing its machine with its callers. Requests carry a
bearer key (the server is started with RLAIF_API_KEYS). Prints one JSON line of figures on stdout and a short
summary on stderr; the server logs and the bulk run folder stay in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import service_support  # noqa: E402  (the same server process the service tests start)

ROOT = Path(__file__).resolve().parent.parent

MAX_SECONDS = 600  # per load phase
MAX_CLIENTS = 256
MAX_BULK_PAIRS = 4096
START_TIMEOUT = 600  # server start (the vLLM engine takes ~40-60 s on 2 cores)
BULK_TIMEOUT = 3600
SERVED_OFFSET = 1_000_000  # served pairs are numbered from here; bulk pairs from 0: never the same pair twice

INSTANT_JUDGE = """\
name: {name}
description: instant fake backend (answers judge nothing; for measuring our own code and plumbing)
mode: pairwise
backend: {{kind: fake}}
template: judge/pairwise.jinja
constitution: constitution/default.yaml
verdict:
  parser: first_token_logprobs
  labels: {{A: ["A"], B: ["B"]}}
  top_logprobs: 20
both_orders: true
"""

# --------------------------------------------------------------------------------------------------- the pairs
TOPICS = ["a Python list comprehension", "compound interest", "the French Revolution", "sourdough bread",
          "a first marathon", "the water cycle", "a job interview", "solar panels", "a slow laptop", "houseplants",
          "learning Spanish", "a leaking tap", "photosynthesis", "a budget for a trip to Japan", "SQL joins",
          "sleep and memory", "a birthday speech", "electric cars", "the Pythagorean theorem", "a cover letter",
          "composting", "a git merge conflict", "jet lag", "the stock market", "a vegetarian lasagna",
          "black holes", "remote work", "a cat that will not eat", "climate change", "a chess opening"]
ASKS = ["Can you explain {t} in simple terms?", "What should I know before starting with {t}?",
        "Give me three quick tips about {t}.", "My friend asked me about {t}; what is a short, accurate answer?",
        "What is the most common mistake people make with {t}?", "How would you describe {t} to a 10-year-old?",
        "I have {n} minutes. What is the one thing to understand about {t}?",
        "Is it worth spending {n} dollars on help with {t}?"]
GOOD = ["Sure. In short, {t} comes down to a few basic ideas; start with the simplest one and build from there.",
        "The key point about {t} is to go step by step and check each step before moving on.",
        "A good way to approach {t} is to start small, measure what happens, and adjust.",
        "Most people find {t} easier once they see a worked example, so here is one in {n} short steps.",
        "Here is a clear answer: {t} depends mostly on one factor, and the rest follows from it."]
WEAK = ["I am not sure, but {t} is probably complicated and you should ask someone else.",
        "{T} is a very big topic. There are many things to say about it.",
        "You can search online for {t}; there is a lot of information out there.",
        "It depends. Everyone has a different opinion about {t}.",
        "Honestly {t} is not that important, you can skip it."]
EXTRAS = ["Let me know if you want more detail.", "Would an example help?", "Good luck!", "",
          "Feel free to ask a follow-up question.", "I hope this helps."]


def _pick(options: list[str], i: int, salt: int) -> str:
    h = (i * 2654435761 + salt * 40503 + 0x9E3779B9) & 0xFFFFFFFF
    h ^= h >> 15
    return options[(h * 2246822519 & 0xFFFFFFFF) % len(options)]


def make_pair(i: int) -> dict[str, str]:
    """Pair number i: deterministic, cheap (no Random per pair), distinct for every i; a prompt of one sentence and
    two answers of one or two, the better one first or second at random."""
    topic, n = _pick(TOPICS, i, 1), 3 + i % 57
    fill = {"t": topic, "T": topic[0].upper() + topic[1:], "n": n}
    prompt = f"{_pick(ASKS, i, 2).format(**fill)} (question {i})"
    good = f"{_pick(GOOD, i, 3).format(**fill)} {_pick(EXTRAS, i, 4)}".strip()
    weak = f"{_pick(WEAK, i, 5).format(**fill)} {_pick(EXTRAS, i, 6)}".strip()
    first, second = (good, weak) if (i * 7 + 3) % 11 < 6 else (weak, good)
    return {"prompt": prompt, "response_1": first, "response_2": second}


def write_pairs(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"pair-{i}", **make_pair(i)}) + "\n")


# --------------------------------------------------------------------------------------- processes and memory
def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _descendants(pid: int) -> list[int]:
    """pid and every process below it (by /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return found


class RSSMonitor:
    """Samples the summed VmRSS of a process and its children every `every` seconds; `.peak_kb` is the largest."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak_kb = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RSSMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmRSS") for p in _descendants(self.pid)))
            if self._stop.wait(self.every):
                return


class Server(service_support.Server):
    """`rlaif serve` in its own process group on 127.0.0.1 with one API key (tests/service_support.py), read here."""

    def __init__(self, service_dir: Path, judge: str, key: str, access_log: bool):
        super().__init__(service_dir, [judge], {"bench": key}, access_log=access_log)
        self.key = key

    def start(self, timeout: float = START_TIMEOUT) -> Server:
        try:
            super().start(timeout)
        except RuntimeError as exc:
            sys.exit(str(exc))
        return self

    def get(self, path: str, timeout: float = 60) -> str:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.read().decode()

    def engine_counts(self) -> tuple[float, float]:
        """(engine calls, engine requests) summed over the engines, from /metrics."""
        calls = requests = 0.0
        for line in self.get("/metrics").splitlines():
            if line.startswith("rlaif_engine_calls{"):
                calls += float(line.rsplit(" ", 1)[1])
            elif line.startswith("rlaif_engine_requests{"):
                requests += float(line.rsplit(" ", 1)[1])
        return calls, requests


# ----------------------------------------------------------------------------------------------- the clients
class Conn:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads a Content-Length reply; nothing more."""

    def __init__(self, port: int, path: str, key: str, timeout: float):
        self.port, self.timeout = port, timeout
        self.head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = sock, b""
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        """(status, body); raises OSError (or ValueError for a reply it cannot read) and closes the connection."""
        try:
            sock = self.sock or self._connect()
            sock.sendall(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                self._recv(sock)
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            lines = head.split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length, close = None, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if length is None:
                raise ValueError("a reply without Content-Length")
            while len(self.buf) < length:
                self._recv(sock)
            reply, self.buf = self.buf[:length], self.buf[length:]
            if close:
                self.close()
            return status, reply
        except BaseException:
            self.close()
            raise

    def _recv(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk


class Load:
    """`clients` threads sending one pair per request until the deadline or `max_requests`; replies are tallied."""

    def __init__(self, server: Server, judge: str, clients: int, seconds: float, max_requests: int, timeout: float,
                 first_pair: int):
        self.server, self.judge, self.clients, self.seconds = server, judge, clients, seconds
        self.max_requests, self.timeout = max_requests, timeout
        self._next = iter(range(first_pair, first_pair + max_requests)).__next__  # atomic under the GIL
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.in_window = 0  # replies (any) that came before the deadline
        self.ok = self.judged = self.labeled = self.unlabeled = 0
        self.http_errors: dict[str, int] = {}
        self.unlabeled_reasons: dict[str, int] = {}
        self.last_reply = 0.0

    def body(self, i: int) -> bytes:
        return json.dumps({"judge": self.judge, "pairs": [{"id": f"p{i}", **make_pair(i)}]}).encode()

    def run(self) -> float:
        """Run the load; return the wall seconds from the start to the last reply."""
        self.started = time.perf_counter()
        self.deadline = self.started + self.seconds
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return max(self.last_reply, self.deadline if not self.latencies else self.started) - self.started

    def _client(self) -> None:
        conn = Conn(self.server.port, "/v1/judge/pairwise", self.server.key, self.timeout)
        latencies: list[float] = []
        try:
            while time.perf_counter() < self.deadline:
                try:
                    i = self._next()
                except StopIteration:
                    break
                body = self.body(i)
                sent = time.perf_counter()
                try:
                    status, reply = conn.post(body)
                except (OSError, ValueError) as exc:
                    self._tally(sent, f"{type(exc).__name__}: {exc}"[:120], None)
                    time.sleep(0.05)  # a server that is gone is not hammered in a tight loop
                    continue
                got = time.perf_counter()
                latencies.append(got - sent)
                self._tally(sent, None if status == 200 else f"HTTP {status}", reply, got)
        finally:
            conn.close()
            with self._lock:
                self.latencies.extend(latencies)

    def _tally(self, sent: float, error: str | None, reply: bytes | None, got: float | None = None) -> None:
        got = got or time.perf_counter()
        results = []
        if error is None:
            try:
                results = json.loads(reply or b"")["results"]
            except (ValueError, KeyError, TypeError):
                error = "unreadable 200 reply"
        elif reply:
            try:
                error += f" {json.loads(reply)['error']['code']}"
            except (ValueError, KeyError, TypeError):
                pass
        with self._lock:
            self.last_reply = max(self.last_reply, got)
            self.in_window += got <= self.deadline
            if error is not None:
                self.http_errors[error] = self.http_errors.get(error, 0) + 1
                return
            self.ok += 1
            for r in results:
                self.judged += 1
                if r.get("label") is None:
                    self.unlabeled += 1
                    reason = str(r.get("reason"))[:80]
                    self.unlabeled_reasons[reason] = self.unlabeled_reasons.get(reason, 0) + 1
                else:
                    self.labeled += 1


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def serve_phase(args: argparse.Namespace, judge: str, seconds: float, work: Path, name: str, warmup: int) -> dict:
    """Start a server on `judge`, warm it up, run the load, read its figures, stop it."""
    key = secrets.token_urlsafe(24)
    server = Server(work / f"service-{name}", judge, key, args.access_log)
    print(f"[{name}] starting rlaif serve --judge {judge} ...", file=sys.stderr, flush=True)
    server.start()
    try:
        judge_name = json.loads(server.get("/v1/judges"))["data"][0]["id"]
        warm = Load(server, judge_name, 1, 3600, warmup, args.request_timeout, first_pair=SERVED_OFFSET - warmup)
        warm_s = warm.run() if warmup else 0.0
        if warm.http_errors:
            sys.exit(f"[{name}] warm-up requests failed: {warm.http_errors}; log {server.log}:\n{server.tail()}")
        calls0, requests0 = server.engine_counts()
        assert server.proc is not None
        print(f"[{name}] server up in {server.start_s:.1f} s, warm-up {warmup} requests in {warm_s:.1f} s; "
              f"{args.clients} clients for {seconds:g} s ...", file=sys.stderr, flush=True)
        load = Load(server, judge_name, args.clients, seconds, args.max_requests, args.request_timeout,
                    first_pair=SERVED_OFFSET if name == "real" else 2 * SERVED_OFFSET)
        server_cpu0, client_cpu0 = _cpu_seconds(server.proc.pid), _own_cpu_seconds()
        with RSSMonitor(server.proc.pid) as rss:
            wall = load.run()
            server_cpu = _cpu_seconds(server.proc.pid) - server_cpu0
            client_cpu = _own_cpu_seconds() - client_cpu0
            calls1, requests1 = server.engine_counts()
            hwm_kb = _status_kb(server.proc.pid, "VmHWM")
        alive = server.proc.poll() is None
    finally:
        server.stop()
    lat = sorted(load.latencies)
    calls, engine_requests = calls1 - calls0, requests1 - requests0
    errors = sum(load.http_errors.values())
    return {
        "judge": judge_name, "clients": args.clients, "seconds": seconds, "wall_seconds": round(wall, 2),
        "requests": load.ok + errors, "ok": load.ok, "http_errors": errors, "http_error_kinds": load.http_errors,
        "unlabeled": load.unlabeled, "unlabeled_reasons": load.unlabeled_reasons,
        "requests_per_s": round((load.ok + errors) / wall, 2) if wall else None,
        "pairs_per_s": round(load.judged / wall, 3) if wall else None,
        "labels_per_s": round(load.labeled / wall, 3) if wall else None,
        "replies_in_window": load.in_window,
        "p50_ms": _ms(_quantile(lat, 0.50)), "p99_ms": _ms(_quantile(lat, 0.99)), "max_ms": _ms(lat[-1] if lat else None),
        "peak_rss_mb": round(hwm_kb / 1024, 1), "peak_tree_rss_mb": round(rss.peak_kb / 1024, 1),
        "engine_calls": int(calls), "engine_requests": int(engine_requests),
        "mean_engine_requests_per_call": round(engine_requests / calls, 2) if calls else None,
        "server_cpu_s": round(server_cpu, 1), "client_cpu_s": round(client_cpu, 1),
        "server_start_s": round(server.start_s, 1), "warmup_requests": warmup, "server_alive_at_end": alive,
    }


def bulk_phase(args: argparse.Namespace, work: Path) -> dict:
    pairs, out = work / "bulk-pairs.jsonl", work / "bulk-run"
    write_pairs(pairs, args.bulk_pairs)
    command = [sys.executable, "-m", "rlaif.cli", "label", "--pairs", str(pairs), "--judge", args.judge, "--out", str(out),
               "--quiet"]
    print(f"[bulk] rlaif label on {args.bulk_pairs} pairs ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    with RSSMonitor(proc.pid) as rss:
        try:
            _, err = proc.communicate(timeout=BULK_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            sys.exit(f"rlaif label did not finish in {BULK_TIMEOUT} s")
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"rlaif label failed ({proc.returncode}):\n{err[-3000:]}")
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    return {"pairs": args.bulk_pairs, "labels_per_s": counts["labels_per_second"], "label_seconds": counts["label_seconds"],
            "labeled": counts["labeled"], "unlabeled": counts["unlabeled"], "wall_seconds": round(wall, 1),
            "peak_tree_rss_mb": round(rss.peak_kb / 1024, 1)}


def instant_judge(judge: str, folder: Path) -> Path:
    """The judge's own YAML with its backend swapped for the instant fake one (the same template, constitution,
    principles and orders, so the same requests reach the engine); a stock one for an ensemble."""
    import yaml

    from rlaif.resources import resolve_resource

    data = yaml.safe_load(resolve_resource(judge, "judges").read_text(encoding="utf-8"))
    path = folder / "instant-judge.yaml"
    if isinstance(data, dict) and "ensemble" not in data:
        data.update(name=f"{data.get('name', 'judge')}-instant", backend={"kind": "fake"},
                    description="the benchmarked judge on the instant fake backend (its answers judge nothing)")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(INSTANT_JUDGE.format(name="instant-pairwise"))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judge", default="smollm2-pairwise", help="pairwise judge served and bulk-labeled (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60, help="load on the real judge, seconds (default: %(default)s)")
    parser.add_argument("--instant-seconds", type=float, default=60, help="load on the instant backend (default: %(default)s)")
    parser.add_argument("--bulk-pairs", type=int, default=256, help="pairs for the bulk `rlaif label` run (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="most requests per load phase (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=600, help="seconds one request may take (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="requests sent one at a time before the load (default: %(default)s)")
    parser.add_argument("--skip-real", action="store_true", help="no load on the real judge")
    parser.add_argument("--skip-bulk", action="store_true", help="no bulk `rlaif label` run (no ratio)")
    parser.add_argument("--skip-instant", action="store_true", help="no load on the instant backend")
    parser.add_argument("--access-log", action="store_true", help="start the servers with --access-log (one log line per request)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "serve",
                        help="work folder: server logs, service folders, the bulk run (emptied first; default: %(default)s)")
    args = parser.parse_args()
    for name, value, low, high in (("--seconds", args.seconds, 1, MAX_SECONDS),
                                   ("--instant-seconds", args.instant_seconds, 1, MAX_SECONDS),
                                   ("--clients", args.clients, 1, MAX_CLIENTS), ("--bulk-pairs", args.bulk_pairs, 1, MAX_BULK_PAIRS),
                                   ("--max-requests", args.max_requests, 1, 1_000_000),
                                   ("--request-timeout", args.request_timeout, 1, 3600), ("--warmup", args.warmup, 0, 100)):
        if not low <= value <= high:
            parser.error(f"{name} {value:g}: give {low}..{high} (the load test is bounded)")

    work = args.out
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result: dict = {"clients": args.clients, "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    if not args.skip_real:
        result["real"] = serve_phase(args, args.judge, args.seconds, work, "real", args.warmup)
    if not args.skip_bulk:
        result["bulk"] = bulk_phase(args, work)
    if "real" in result and "bulk" in result and result["bulk"]["labels_per_s"]:
        result["served_over_bulk"] = round(result["real"]["pairs_per_s"] / result["bulk"]["labels_per_s"], 3)
    if not args.skip_instant:
        result["instant"] = serve_phase(args, str(instant_judge(args.judge, work)), args.instant_seconds, work,
                                        "instant", max(args.warmup, 20))
    targets = {}
    phases = [result[p] for p in ("real", "instant") if p in result]
    if phases:
        targets["zero_errors"] = all(p["http_errors"] == 0 and p["unlabeled"] == 0 for p in phases)
    if "served_over_bulk" in result:
        targets["served_over_bulk_at_least_0.8"] = result["served_over_bulk"] >= 0.8
    if "instant" in result:
        targets["instant_at_least_1000_pairs_per_s"] = (result["instant"]["pairs_per_s"] or 0) >= 1000
    result["targets_met"] = targets
    print(json.dumps(result))
    for p in ("real", "instant"):
        if p in result:
            r = result[p]
            print(f"{p:>8}: {r['requests_per_s']} req/s, {r['labels_per_s']} labels/s, p50 {r['p50_ms']} ms, "
                  f"p99 {r['p99_ms']} ms, max {r['max_ms']} ms, errors {r['http_errors']} (+{r['unlabeled']} unlabeled), "
                  f"server peak RSS {r['peak_rss_mb']} MB, {r['mean_engine_requests_per_call']} engine requests/call",
                  file=sys.stderr)
    if "bulk" in result:
        print(f"    bulk: {result['bulk']['labels_per_s']} labels/s"
              + (f"; served/bulk {result['served_over_bulk']}" if "served_over_bulk" in result else ""), file=sys.stderr)
    print(f" targets: {targets}", file=sys.stderr)


if __name__ == "__main__":
    main()
