"""Labeling at scale with an instant backend: only our own code is timed.

    .venv/bin/python benchmarks/bench_scale.py --pairs 100000
    .venv/bin/python benchmarks/bench_scale.py --pairs 100000 --kills 1     # also: SIGKILL mid-run, then resume
    .venv/bin/python benchmarks/bench_scale.py --pairs 100000 --shards 2    # shards side by side, then merged

Writes N synthetic pairs (JSONL, streamed), labels them with `rlaif label` in a child process (both orders, one
principle, the `fake` backend kind that answers at once with 20 top logprobs), and prints one JSON line:
pairs, labels_per_s (pairs judged / seconds of the label stage, dataset writing included), peak_rss_mb (the
label process's peak resident memory), judgments_bytes_per_pair (judgments.jsonl size / distinct pairs; the
texts under judgment are not in it), and the wall time. With --kills K the label process is killed with
SIGKILL K times at random points (after it has written some judgments), then run to the end; the line then
also says whether the output has exactly one judgment and one row per pair. With --shards K, K label processes
run at once (`--shard i/K`, each reading the whole input and keeping its part), then `rlaif merge` combines
them; labels_per_s is then pairs / the longest shard's label stage, and the merge time is given apart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUDGE = """name: instant-bench
description: Scale benchmark judge (instant fake backend; its labels judge nothing).
backend: {kind: fake}
principles: {mode: fixed, ids: [helpfulness]}
both_orders: true
"""
WORDS = ("the model answer explains why a short clear reply helps users who ask about code data science "
         "history cooking travel health money law music sport weather").split()


def write_pairs(path: Path, n: int, seed: int = 0) -> None:
    """N distinct synthetic pairs (a prompt of ~15 words, responses of ~40), written as they are made."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"pair-{i}", "prompt": f"Question {i}: {text(15)}?",
                                 "response_1": text(40), "response_2": text(40)}) + "\n")


def label_command(pairs: Path, out: Path, judge: Path, batch_size: int) -> list[str]:
    return [sys.executable, "-m", "rlaif.cli", "label", "--pairs", str(pairs), "--judge", str(judge), "--out",
            str(out), "--batch-size", str(batch_size), "--quiet"]


def run_killed(command: list[str], judgments: Path, n: int, rng: random.Random) -> None:
    """Start the label process and SIGKILL it at a random point after it has written some judgments."""
    start_bytes = judgments.stat().st_size if judgments.exists() else 0
    target = start_bytes + rng.uniform(0.05, 0.3) * n * 1400  # somewhere in the next 5-30% of the work
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if judgments.exists() and judgments.stat().st_size >= target:
            time.sleep(rng.uniform(0, 0.2))  # land anywhere: mid-batch, mid-write, mid-index
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()


def check_output(out: Path, n: int) -> dict:
    """One judgment line per distinct pair and one row per pair id, nothing missing."""
    keys, lines = set(), 0
    with (out / "judgments.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            try:
                keys.add(json.loads(line)["key"])
            except (ValueError, KeyError):
                continue  # a torn line a kill left, ended by the next append
            lines += 1
    ids = set()
    for name in ("preferences.jsonl", "unlabeled.jsonl"):
        with (out / name).open(encoding="utf-8") as fh:
            ids.update(json.loads(line)["pair_id"] for line in fh)
    return {"judgment_lines": lines, "distinct_judged": len(keys), "ids_with_a_row": len(ids),
            "exactly_one_label_per_pair": lines == len(keys) == n and len(ids) == n}


def run_shards(pairs: Path, work: Path, judge: Path, n: int, shards: int, batch_size: int) -> dict:
    """K shard processes side by side, then `rlaif merge`; the merged output is checked like a killed run's."""
    outs = [work / f"shard{i}" for i in range(shards)]
    started = time.perf_counter()
    procs = [subprocess.Popen([*label_command(pairs, out, judge, batch_size), "--shard", f"{i}/{shards}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"a shard failed ({proc.returncode}):\n{err[-3000:]}")
    shards_wall = time.perf_counter() - started
    counts = [json.loads((out / "manifest.json").read_text())["counts"] for out in outs]
    started = time.perf_counter()
    merged = work / "merged"
    done = subprocess.run([sys.executable, "-m", "rlaif.cli", "merge", *map(str, outs), "--out", str(merged),
                           "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"rlaif merge failed ({done.returncode}):\n{done.stderr[-3000:]}")
    merge_seconds = time.perf_counter() - started
    longest = max(c["label_seconds"] for c in counts)
    return {"pairs": n, "shards": shards, "labels_per_s": round(n / longest, 1),
            "shard_label_seconds": [c["label_seconds"] for c in counts], "shards_wall_seconds": round(shards_wall, 1),
            "merge_seconds": round(merge_seconds, 1),
            "labels_per_s_with_merge": round(n / (shards_wall + merge_seconds), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            **check_output(merged, n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, required=True, help="how many synthetic pairs")
    parser.add_argument("--batch-size", type=int, default=1024, help="pairs per judge chunk (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL the label process this many times first")
    parser.add_argument("--shards", type=int, default=1, help="run this many shard processes at once, then merge")
    parser.add_argument("--out", type=Path, help="work folder (default: benchmarks/out/scale-N; emptied first)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (it is large at 1M pairs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = args.out or ROOT / "benchmarks" / "out" / f"scale-{args.pairs}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pairs, judge, out = work / "pairs.jsonl", work / "judge.yaml", work / "run"
    write_pairs(pairs, args.pairs, args.seed)
    judge.write_text(JUDGE)
    if args.shards > 1:
        print(json.dumps(run_shards(pairs, work, judge, args.pairs, args.shards, args.batch_size)))
        if not args.keep and not args.out:
            shutil.rmtree(work, ignore_errors=True)
        return
    command = label_command(pairs, out, judge, args.batch_size)
    env_note = os.environ.get("OMP_NUM_THREADS")
    rng = random.Random(args.seed)
    started = time.perf_counter()
    for _ in range(args.kills):
        run_killed(command, out / "judgments.jsonl", args.pairs, rng)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"rlaif label failed ({done.returncode}):\n{done.stderr[-3000:]}")
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest label process (KiB on Linux)
    distinct = counts["unique_pairs"]
    result = {
        "pairs": args.pairs,
        "labels_per_s": round(counts["judged_now"] / counts["label_seconds"], 1) if counts["judged_now"] else None,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "judgments_bytes_per_pair": round((out / "judgments.jsonl").stat().st_size / distinct, 1),
        "label_seconds": counts["label_seconds"], "wall_seconds": round(wall, 1),
        "labeled": counts["labeled"], "unlabeled": counts["unlabeled"], "batch_size": args.batch_size,
    }
    if args.kills:
        result.update(kills=args.kills, reused_after_kills=counts["reused_from_earlier_runs"],
                      **check_output(out, args.pairs))
        del result["labels_per_s"]  # the last run judged only what the kills left: not a throughput figure
    if env_note:
        result["omp_num_threads"] = env_note
    print(json.dumps(result))
    if not args.keep and not args.out:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
