"""What a label costs on the real engine: prefix caching on vs off, and a constitution 4x longer.

Four arms judge the same pairs (real policy samples, as in bench_label.py) with the embedded judge, each in
its own process with its own in-process vLLM engine (an engine setting cannot change once it has started):

  cache-on   the judge as shipped: `enable_prefix_caching: true`, the default constitution
  cache-off  the same prompts with `enable_prefix_caching: false`
  long-on    every principle text 4x longer (the text repeated 4 times), prefix caching on
  long-off   the longer principles, prefix caching off

For each arm it prints seconds, labels/s, prompt tokens per label, prompt tokens/s and seconds per label
(a label is one pair judged in both orders, 2 requests; 4 pairs warm the engine up first and are not
timed), and checks that caching does not change the probabilities.

    .venv/bin/python benchmarks/bench_label_costs.py [--pairs 32] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ARMS = {
    "cache-on": {"cache": True, "long": False},
    "cache-off": {"cache": False, "long": False},
    "long-on": {"cache": True, "long": True},
    "long-off": {"cache": False, "long": True},
}
WARM = 4


def write_long_constitution(path: Path) -> Path:
    """The default constitution with every principle text 4x as long (a new name and version)."""
    from rlaif.resources import resolve_resource

    data = yaml.safe_load(resolve_resource("constitution/default.yaml", "prompts").read_text(encoding="utf-8"))
    data["name"], data["version"] = "default-4x", f"{data['version']}-4x"
    for principle in data["principles"]:
        principle["text"] = " ".join([principle["text"].strip()] * 4)
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    return path


def make_pairs(judge_name: str, n_pairs: int, out: Path) -> None:
    from bench_label import make_pairs as sample_pairs

    from rlaif.backends.vllm_backend import VLLMBackend
    from rlaif.config import load_judge_config

    backend = VLLMBackend(load_judge_config(judge_name).backend)
    pairs = sample_pairs(backend, n_pairs)
    out.write_text("".join(p.model_dump_json() + "\n" for p in pairs), encoding="utf-8")


def run_arm(judge_name: str, arm: str, pairs_file: Path, long_constitution: Path) -> dict:
    from rlaif.backends.vllm_backend import VLLMBackend
    from rlaif.config import load_judge_config
    from rlaif.judging.pairwise import PairwiseJudge
    from rlaif.records import CandidatePair

    config = load_judge_config(judge_name)
    backend_config = config.backend.model_copy(update={"enable_prefix_caching": ARMS[arm]["cache"]})
    update: dict = {"backend": backend_config}
    if ARMS[arm]["long"]:
        update["constitution"] = str(long_constitution)
    config = config.model_copy(update=update)
    pairs = [CandidatePair.model_validate_json(line) for line in pairs_file.read_text(encoding="utf-8").splitlines()]
    started = time.perf_counter()
    backend = VLLMBackend(config.backend)
    startup = time.perf_counter() - started
    judge = PairwiseJudge(config, backend)
    judge.judge(pairs[:WARM])
    timed = pairs[WARM:]
    started = time.perf_counter()
    judgments = judge.judge(timed)
    seconds = time.perf_counter() - started
    prompt_tokens = sum(j.prompt_tokens for j in judgments)
    return {
        "arm": arm,
        "prefix_caching": ARMS[arm]["cache"],
        "constitution": judge.constitution.name,
        "pairs": len(timed),
        "labeled": sum(j.labeled for j in judgments),
        "engine_startup_s": round(startup, 1),
        "seconds": round(seconds, 2),
        "labels_per_s": round(len(timed) / seconds, 3),
        "seconds_per_label": round(seconds / len(timed), 3),
        "prompt_tokens_per_label": round(prompt_tokens / len(timed), 1),
        "prompt_tokens_per_s": round(prompt_tokens / seconds, 1),
        "p_first": [j.p_first for j in judgments],
    }


def child(*args: str) -> dict | None:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{' '.join(args)} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32, help="pairs to label per arm (default: %(default)s)")
    parser.add_argument("--judge", default="smollm2-pairwise")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms (default: all four)")
    parser.add_argument("--out", default="benchmarks/out", help="where the figures are written as JSON")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs_file, long_file = out / "bench_label_costs.pairs.jsonl", out / "constitution-4x.yaml"
    if args.child:
        what, path = args.child
        if what == "pairs":
            make_pairs(args.judge, args.pairs, Path(path))
        else:
            print(json.dumps(run_arm(args.judge, what, Path(path), long_file)))
        return

    write_long_constitution(long_file)
    have = len(pairs_file.read_text(encoding="utf-8").splitlines()) if pairs_file.exists() else 0
    if have != args.pairs + WARM:  # the policy samples of an earlier run of this script are reused
        child("--judge", args.judge, "--pairs", str(args.pairs), "--out", str(out), "--child", "pairs", str(pairs_file))
    results = []
    for arm in args.arms.split(","):
        result = child("--judge", args.judge, "--out", str(out), "--child", arm, str(pairs_file))
        assert result is not None
        results.append(result)
        shown = {k: v for k, v in result.items() if k != "p_first"}
        print(json.dumps(shown), flush=True)
    by_arm = {r["arm"]: r for r in results}
    for on, off in (("cache-on", "cache-off"), ("long-on", "long-off")):
        if on in by_arm and off in by_arm:
            diffs = [abs(a - b) for a, b in zip(by_arm[on]["p_first"], by_arm[off]["p_first"], strict=True)
                     if a is not None and b is not None]
            print(json.dumps({"compare": f"{on} vs {off}", "speedup": round(by_arm[off]["seconds"] / by_arm[on]["seconds"], 2),
                              "max_p_first_diff": round(max(diffs), 6) if diffs else None}))
    for long, short in (("long-on", "cache-on"), ("long-off", "cache-off")):
        if long in by_arm and short in by_arm:
            a, b = by_arm[long], by_arm[short]
            print(json.dumps({"compare": f"{long} vs {short}",
                              "tokens_ratio": round(a["prompt_tokens_per_label"] / b["prompt_tokens_per_label"], 2),
                              "seconds_ratio": round(a["seconds"] / b["seconds"], 2)}))
    (out / "bench_label_costs.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
