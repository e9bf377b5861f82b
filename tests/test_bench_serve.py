"""benchmarks/bench_serve.py end to end in a tiny configuration: every phase on the instant fake judge, a second or
two each, so the script's plumbing (servers, clients, /metrics, the bulk run, the JSON line) is checked in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_serve import INSTANT_JUDGE, make_pair  # noqa: E402


def test_pairs_are_distinct_short_and_deterministic():
    pairs = [make_pair(i) for i in range(20000)]
    assert len({tuple(p.values()) for p in pairs}) == len(pairs)
    assert make_pair(7) == make_pair(7)
    assert all(p["response_1"] != p["response_2"] and len(p["prompt"]) < 200 for p in pairs)


def test_all_phases_on_the_instant_judge(tmp_path):
    judge = tmp_path / "fake.yaml"
    judge.write_text(INSTANT_JUDGE.format(name="bench-fake"))
    out = tmp_path / "bench"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--judge", str(judge),
                           "--clients", "4", "--seconds", "1", "--instant-seconds", "1", "--bulk-pairs", "8",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for phase in ("real", "instant"):
        figures = report[phase]
        assert figures["http_errors"] == 0 and figures["unlabeled"] == 0, figures
        assert figures["ok"] == figures["requests"] > 0 and figures["server_alive_at_end"]
        assert figures["pairs_per_s"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert figures["peak_rss_mb"] > 10 and figures["peak_tree_rss_mb"] > 10
        assert figures["engine_requests"] == 2 * figures["ok"]  # both orders, one principle, warm-up excluded
        assert figures["engine_calls"] >= 1 and figures["mean_engine_requests_per_call"] >= 2
    assert report["bulk"]["pairs"] == report["bulk"]["labeled"] + report["bulk"]["unlabeled"] == 8
    assert report["served_over_bulk"] > 0
    assert report["targets_met"]["zero_errors"] is True
    assert (out / "service-real-server.log").exists() and (out / "bulk-run" / "manifest.json").exists()


def test_refuses_unbounded_runs():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_serve.py"), "--seconds", "3600"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bounded" in done.stderr
