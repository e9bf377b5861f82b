"""The audit commands: `rlaif audit`, `rlaif humans sample|import|size` and `rlaif hygiene`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlaif.cli.common import fraction, out_folder, positive_int
from rlaif.errors import InputError

__all__ = ["add_parsers"]


def _load_gold(args: argparse.Namespace):
    from rlaif.audit.gold import GoldMapping, load_gold
    from rlaif.config import load_yaml_model

    mapping = load_yaml_model(Path(args.mapping), GoldMapping) if args.mapping else None
    items, bad = load_gold(args.gold, fmt=args.format, mapping=mapping)
    for row in bad[:20]:
        print(f"skipping gold row {row.file}:{row.line}: {row.error}", file=sys.stderr)
    if not items:
        raise InputError(f"{args.gold} has no usable gold item ({len(bad)} invalid rows): give a canonical JSONL, "
                         "PandaLM or LLMBar file, or --mapping for another format")
    if args.limit:
        items = items[: args.limit]
    return items, bad


def cmd_audit(args: argparse.Namespace) -> int:
    from rlaif.audit.judging import judge_gold, match_run
    from rlaif.backends import BackendPool
    from rlaif.judging import make_judge
    from rlaif.store import RunFolder

    items, bad = _load_gold(args)
    out = args.out
    run = RunFolder(out)
    run.write_jsonl("invalid_gold_rows.jsonl", bad)
    if args.labels:
        records, judge_name = match_run(items, args.labels), f"labels from {args.labels}"
    else:
        with BackendPool() as pool:
            judge = make_judge(args.judge, pool, "pairwise", "`rlaif audit`")
            records = judge_gold(items, judge, run, args.batch_size, not args.quiet)
        judge_name = judge.name
    from rlaif.audit.compute import compute_audit
    from rlaif.audit.report import gate, write_report

    metrics = compute_audit(records, tie_margin=args.tie_margin, n_boot=args.bootstrap, seed=args.seed)
    meta: dict[str, Any] = {"judge": judge_name, "gold": str(args.gold), "invalid_rows": len(bad)}
    meta["gate"] = gate(metrics, args.min_kappa, args.min_accuracy)
    files = write_report(out, metrics, meta)
    print((out / "report.md").read_text().split("## Biases")[0])
    print("files: " + ", ".join(str(p) for p in files.values()))
    if meta["gate"] and not meta["gate"]["passed"]:
        print(f"rlaif audit: gate FAILED: {meta['gate']['detail']}", file=sys.stderr)
        return 1
    return 0


def cmd_humans(args: argparse.Namespace) -> int:
    from rlaif.audit import sampling

    if args.action == "size":
        from rlaif.audit.metrics import sample_size_for_width

        n = sample_size_for_width(args.width, p=args.p, confidence=args.confidence, population=args.population)
        print(f"{n} human labels bound the {args.confidence:.0%} interval of an agreement rate near {args.p} to a width of {args.width}")
        return 0
    if args.action == "sample":
        if not args.run:
            raise InputError("humans sample needs --run RUN_DIR (a folder written by `rlaif label` or `rlaif run`)")
        items = sampling.labeled_candidates(args.run)
        picked = sampling.select(items, args.n, args.strategy, args.seed)
        path = sampling.export_annotation(picked, args.out)
        print(f"{len(picked)} of {len(items)} labeled pairs ({args.strategy}, seed {args.seed}) -> {path}\n"
              "Fill in human_label with A, B or tie (one row per annotator; repeat a row for more annotators), then run "
              f"`rlaif humans import --annotations {path} --out gold.jsonl`.")
        return 0
    from rlaif.store import RunFolder

    if not args.annotations:
        raise InputError("humans import needs --annotations FILE (the file `rlaif humans sample` wrote, filled in)")
    gold, bad = sampling.import_annotation(args.annotations)
    for row in bad[:20]:
        print(f"skipping {row.file}:{row.line}: {row.error}", file=sys.stderr)
    if not gold:
        raise InputError(f"{args.annotations}: none of its {len(bad)} rows has a human label; fill in human_label "
                         "with A, B or tie (or 1, 2, 0) and import again")
    out = Path(args.out)
    RunFolder(out.parent).write_jsonl(out.name, gold)
    print(f"{len(gold)} gold items ({len(bad)} rows skipped) -> {out}\n"
          f"Audit the bulk labels against them: rlaif audit --labels RUN_DIR --gold {out}")
    return 0


def cmd_hygiene(args: argparse.Namespace) -> int:
    from rlaif.audit.hygiene import load_adversarial, run_hygiene
    from rlaif.backends import BackendPool
    from rlaif.judging import make_judge

    items, injections, version = load_adversarial(args.set, args.injections)
    with BackendPool() as pool:
        judge = make_judge(args.judge, pool, "pairwise", "`rlaif hygiene`")
        run_hygiene(judge, args.out, items, injections, version, not args.quiet)
    print((args.out / "hygiene.md").read_text())
    return 0


def add_parsers(sub, shared: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit", parents=[shared], help="measure how far a judge agrees with a human gold set",
        description="Judge every gold pair with the bulk-labeling code (both orders), or match the labels of an earlier "
                    "`rlaif label` run (--labels), then report agreement (accuracy, Cohen's kappa, the human-human ceiling), "
                    "calibration (ECE, Brier, log-loss, reliability diagram, cross-validated temperature scaling, coverage), "
                    "and biases (position, length, per category and principle), each with bootstrap 95%% intervals. "
                    "Writes metrics.json, report.md, report.html and PNG plots. --min-kappa / --min-accuracy make it exit 1 "
                    "below the bar, for CI.")
    p.add_argument("--gold", required=True, help="gold file: canonical JSONL, PandaLM or LLMBar JSON, or any file with --mapping")
    p.add_argument("--format", default="auto", choices=["auto", "canonical", "pandalm", "llmbar", "mapped"],
                   help="gold format (default: detect)")
    p.add_argument("--mapping", help="YAML column mapping for other gold formats (fields of rlaif.audit.gold.GoldMapping)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--judge", default="smollm2-pairwise", help="judge to run on the gold pairs (default: %(default)s)")
    source.add_argument("--labels", help="a `rlaif label` run folder whose judgments to audit instead of judging again")
    p.add_argument("--out", type=out_folder, default=Path("runs/audit"),
                   help="report folder; rerunning resumes the judging (default: %(default)s)")
    p.add_argument("--limit", type=positive_int, help="audit only the first N gold items")
    p.add_argument("--min-kappa", type=float, help="exit 1 if Cohen's kappa is below this")
    p.add_argument("--min-accuracy", type=float, help="exit 1 if accuracy (no ties) is below this")
    p.add_argument("--tie-margin", type=float, default=0.0, help="judge says tie when |P(A)-0.5| <= this (default: %(default)s)")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples for the intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and cross-validation folds")
    p.add_argument("--batch-size", type=positive_int, default=16, help="pairs per judge batch (default: %(default)s)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "humans", parents=[shared], help="plan human labels: sample items to annotate, import the answers, size the sample",
        description="sample: pick labeled pairs of a run for human annotation (uniform, stratified by judge confidence "
                    "and principle, or least confident first) into a blind JSONL/CSV file; import: turn the filled-in "
                    "file into a canonical gold set; size: how many human labels bound the agreement interval.")
    p.add_argument("action", choices=["sample", "import", "size"])
    p.add_argument("--run", help="sample: the run folder with preferences.jsonl")
    p.add_argument("--n", type=positive_int, default=100, help="sample: how many items (default: %(default)s)")
    p.add_argument("--strategy", default="stratified", choices=["uniform", "stratified", "least-confident"],
                   help="sample: (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="annotate.jsonl", help="sample: annotation file (.jsonl or .csv); import: gold JSONL to write")
    p.add_argument("--annotations", help="import: the filled-in annotation file")
    p.add_argument("--width", type=fraction, default=0.1, help="size: total width of the interval, in (0, 1] (default: %(default)s)")
    p.add_argument("--p", type=fraction, default=0.5, help="size: expected agreement rate (0.5 is the worst case)")
    p.add_argument("--confidence", type=fraction, default=0.95, help="size: confidence level (default: %(default)s)")
    p.add_argument("--population", type=positive_int, help="size: number of bulk labels (finite-population correction)")
    p.set_defaults(func=cmd_humans)

    p = sub.add_parser("hygiene", parents=[shared], help="measure how far injected text in a response can steer the judge",
                       description="Judge an adversarial set twice: each worse response as it is, and with injections "
                                   "appended (instructions to the judge, fake verdicts, closing frame markers, chat control "
                                   "tokens, appeals to authority). Reports whether every judge prompt kept its frame, and how "
                                   "often each injection flips the verdict toward the response carrying it, with intervals.")
    p.add_argument("--judge", default="smollm2-pairwise", help="pairwise judge (or ensemble) name or YAML path (default: %(default)s)")
    p.add_argument("--set", default="sets/adversarial-v1.jsonl", help="adversarial pairs {id, prompt, good, bad} (default: %(default)s)")
    p.add_argument("--injections", default="sets/injections-v1.yaml", help="injection texts by kind (default: %(default)s)")
    p.add_argument("--out", type=out_folder, default=Path("runs/hygiene"), help="output folder (default: %(default)s)")
    p.set_defaults(func=cmd_hygiene)
