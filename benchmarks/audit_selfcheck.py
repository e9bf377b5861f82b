"""Self-check of the audit (issue 11): how often each 95% interval of `rlaif audit` (and of `rlaif audit compare`)
covers the true value on synthetic gold sets, and how often the bias flags fire with and without a planted bias.

Every simulated audit is a synthetic gold set (rlaif/audit/selfcheck.py: designs "single", one annotator and no ties
with one item per prompt, and "pandalm", 3 annotators with ties and ~5.9 items per prompt) read by two synthetic
judges (one with planted position and length biases, one without), audited by `compute_audit` with the given
bootstrap resamples, plus the two judges compared by `compare_arrays`. The truth of every metric is the same code on
one sample of --truth-items items from the generator. Prints the coverage table (markdown) and the flag rates, and
writes everything to --out (JSON).

    .venv/bin/python benchmarks/audit_selfcheck.py --sims 1000 --sizes 100 300 1000 --jobs 2 --out benchmarks/out/audit_selfcheck.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from rlaif.audit import selfcheck as S

AUDIT_CODE = Path(S.__file__).parent


def code_version() -> str:
    """A hash of the audit's source: truths and results cached in --out are reused only for the same code."""
    digest = hashlib.sha256()
    for path in sorted(AUDIT_CODE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _truth(name: str, truth_items: int, seed: int) -> tuple[dict, float]:
    start = time.perf_counter()
    return S.truth(S.DESIGNS[name], S.JUDGES, n_items=truth_items, seed=12345 + seed), round(time.perf_counter() - start, 1)


def _cell(name: str, n: int, args: argparse.Namespace, truths: dict) -> dict:
    """The simulated audits of one design and size (run in a worker process)."""
    start = time.perf_counter()

    def progress(done: int) -> None:
        if done % 100 == 0 or done == args.sims:
            print(f"{name} n={n}: {done}/{args.sims} audits, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    result = S.simulate(S.DESIGNS[name], S.JUDGES, n, args.sims, truths, n_boot=args.bootstrap,
                        seed=args.seed * 1_000_003 + n, compare=not args.no_compare, progress=progress)
    result["design_key"], result["seconds"], result["seed"] = name, round(time.perf_counter() - start, 1), args.seed
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=500, help="simulated audits per design and size (default: %(default)s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000], help="gold set sizes (default: %(default)s)")
    ap.add_argument("--designs", nargs="+", default=list(S.DESIGNS), choices=list(S.DESIGNS))
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples per audit (default: %(default)s)")
    ap.add_argument("--truth-items", type=int, default=200_000, help="items of the sample the truth is computed on")
    ap.add_argument("--no-compare", action="store_true", help="skip the judge-vs-judge comparison")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="design and size cells simulated at once, one process each "
                    "(default: %(default)s)")
    ap.add_argument("--resume", action="store_true", help="keep the results --out already holds for the same design, size, "
                    "audits, resamples and seed (a run stopped half way goes on where it stopped); truths and results are "
                    "reused only for the same audit code")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/audit_selfcheck.json"))
    args = ap.parse_args(argv)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    plain = lambda x: json.loads(json.dumps(x, default=str))  # noqa: E731  (tuples -> lists, as read back)
    report: dict = {"args": plain(vars(args)), "judges": plain({k: vars(j) for k, j in S.JUDGES.items()}), "truths": {},
                    "results": []}
    code = report["code_version"] = code_version()
    missing = []
    for name in args.designs:  # the truths first (cached in --out between runs of the same code)
        key = f"{name}/{args.truth_items}/{args.seed}"
        cached = previous.get("truths", {}).get(key)
        if (cached and cached.get("judges") == report["judges"] and cached.get("design") == plain(vars(S.DESIGNS[name]))
                and previous.get("code_version") == code):
            report["truths"][key] = cached
        else:
            missing.append(name)
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(missing)))) as pool:
        truth_jobs = {pool.submit(_truth, name, args.truth_items, args.seed): name for name in missing}
        for job in as_completed(truth_jobs):
            name = truth_jobs[job]
            values, seconds = job.result()
            report["truths"][f"{name}/{args.truth_items}/{args.seed}"] = {
                "design": plain(vars(S.DESIGNS[name])), "judges": report["judges"], "values": values, "seconds": seconds}
            print(f"truth for {name}: {seconds} s", file=sys.stderr, flush=True)
            args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    done = {(r["design_key"], r["n"]): r for r in previous.get("results", []) if args.resume
            and previous.get("code_version") == code
            and (r["sims"], r["n_boot"], r.get("seed")) == (args.sims, args.bootstrap, args.seed)}
    cells = [(name, n) for n in args.sizes for name in args.designs]  # size by size: a partial run has the small sizes
    todo = [cell for cell in cells if cell not in done]
    finished = dict(done)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:  # the costliest cells first
        futures = {pool.submit(_cell, name, n, args, report["truths"][f"{name}/{args.truth_items}/{args.seed}"]["values"]):
                   (name, n) for name, n in sorted(todo, key=lambda c: -c[1])}
        for future in as_completed(futures):
            finished[futures[future]] = future.result()
            report["results"] = [finished[c] for c in cells if c in finished]
            args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    report["results"] = [finished[c] for c in cells]
    print("\n".join(S.coverage_table(report["results"])))
    print()
    print("| design | n | judge | " + " | ".join(f"{f} flagged" for f in ("position_bias", "length_bias")) + " |")
    print("|---|---|---|---|---|")
    for r in report["results"]:
        for judge, rates in r["flag_rates"].items():
            print(f"| {r['design_key']} | {r['n']} | {judge} | {rates.get('position_bias', 0):.3f} | {rates.get('length_bias', 0):.3f} |")
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
