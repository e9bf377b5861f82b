"""The audit commands: `rlaif audit`, `rlaif humans sample|import|size` and `rlaif hygiene`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlaif.cli.common import existing_file, existing_folder, existing_path, fraction, out_file, out_folder, positive_int
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
    if args.action == "compare":
        return _cmd_compare(args)
    if args.sides:
        raise InputError(f"unexpected arguments {' '.join(args.sides)}: did you mean `rlaif audit compare A B`?")
    if not args.gold:
        raise InputError("rlaif audit needs --gold FILE (a human gold set: canonical JSONL, PandaLM, LLMBar, or --mapping)")
    if args.retest is not None and args.retest < 2:
        raise InputError(f"--retest K needs K >= 2 (the judge judges every item K times), got {args.retest}")
    if args.labels and (args.retest or args.templates):
        raise InputError("--retest and --templates judge the gold items again with --judge; they cannot be used with --labels")
    if args.baseline:
        from rlaif.audit.compare import load_audit

        load_audit(args.baseline)  # a baseline without metrics.json is named before any judging
    out = args.out or Path("runs/audit")
    metrics, failed = _audit(args, args.judge, out, variations=True)
    print((out / "report.md").read_text().split("## Biases")[0])
    for key, title in (("retest", "## Noise floor"), ("templates", "## Template sensitivity"), ("baseline", "## Against the baseline")):
        if metrics.get(key):
            text = (out / "report.md").read_text()
            print(title + text.split(title, 1)[1].split("\n## ", 1)[0])
    print(f"files: {out}/ (metrics.json, items.jsonl, report.md, report.html)")
    plots = json.loads((out / "metrics.json").read_text()).get("plots") or []
    if plots:  # report.md links them; the terminal names them
        print("plots: " + ", ".join(str(out / name) for name in plots))
    for message in failed:
        print(f"rlaif audit: gate FAILED: {message}", file=sys.stderr)
    return 1 if failed else 0


def _audit(args: argparse.Namespace, judge_spec: str, out: Path, variations: bool) -> tuple[dict, list[str]]:
    """Judge (or match) the gold items, compute and write the audit into `out`; (metrics, failed gate messages).
    With `variations`, --retest, --templates and --baseline are measured on top of it."""
    from rlaif.audit.run import JudgeSource, LabelsSource, run_audit
    from rlaif.backends import BackendPool
    from rlaif.store import RunFolder

    items, bad = _load_gold(args)
    RunFolder(out).write_jsonl("invalid_gold_rows.jsonl", bad)
    options = _options(args)
    meta = {"invalid_rows": len(bad)}
    if args.labels:
        extend = _extend(args, items, out, None) if variations else None
        result = run_audit(items, str(args.gold), out, LabelsSource(args.labels), options, meta, extend)
        return result.metrics, result.failed
    with BackendPool() as pool:
        extend = _extend(args, items, out, pool) if variations else None
        result = run_audit(items, str(args.gold), out, JudgeSource(judge_spec, pool, "`rlaif audit`"), options, meta, extend)
    return result.metrics, result.failed


def _options(args: argparse.Namespace):
    from rlaif.audit.run import AuditOptions

    return AuditOptions(tie_margin=args.tie_margin, bootstrap=args.bootstrap, seed=args.seed, min_kappa=args.min_kappa,
                        min_accuracy=args.min_accuracy, batch_size=args.batch_size, progress=not args.quiet)


def _extend(args: argparse.Namespace, items: list, out: Path, pool):
    """The `run_audit` hook of `rlaif audit`: --retest and --templates (a judge audit only), then --baseline."""
    from rlaif.audit.run import AuditExtras

    def extend(audited, metrics: dict, rows: list[dict]) -> AuditExtras:
        extra = _variations(args, audited, pool, items, out) if audited.judge is not None else {}
        extras = AuditExtras(sections=_variation_sections(metrics, extra))
        if args.baseline:
            from rlaif.audit.compare import baseline_check

            base = baseline_check(metrics, rows, args.baseline, args.max_drop)
            metrics["baseline"] = base
            extras.sections += ["## Against the baseline", "", f"Baseline: {base['baseline']}.", "",
                                f"**{base['verdict']}**: {base['detail']}", ""]
            if not base["passed"]:
                extras.failed.append(f"against the baseline: {base['detail']}")
        return extras

    return extend


def _variations(args, audited, pool, items, out: Path) -> dict[str, Any]:
    """--retest and --templates: the same judge again with one thing changed, each into its own folder."""
    from dataclasses import replace

    from rlaif.audit.judging import judge_gold
    from rlaif.audit.run import JudgeSource, run_audit
    from rlaif.audit.variation import readings_agreement, retest_varies
    from rlaif.judging import load_constitution, make_judge
    from rlaif.store import RunFolder

    identity = audited.judge.identity
    spec, mode = identity.config, identity.mode
    found: dict[str, Any] = {}
    if args.retest:
        readings = {"repeat 1": audited.records}
        for r in range(1, args.retest):
            again = make_judge(spec, pool, mode, "`rlaif audit`", adjust=_redraw(r))
            readings[f"repeat {r + 1}"] = judge_gold(items, again, RunFolder(out / "retest" / f"repeat-{r + 1}"),
                                                     args.batch_size, not args.quiet)
        configs = identity.single_configs
        found["retest"] = readings_agreement(readings, args.tie_margin, args.bootstrap, args.seed)
        found["retest"]["varies"] = retest_varies(configs, [len(load_constitution(c.constitution).principles) for c in configs])
    if args.templates:
        if identity.kind == "ensemble":
            raise InputError(f"--templates needs a single judge; {identity.name} is an ensemble (audit each member instead)")
        readings = {identity.template: audited.records}
        options = replace(_options(args), min_kappa=None, min_accuracy=None)
        for template in args.templates:
            if template == identity.template or Path(template).stem == Path(identity.template).stem:
                continue
            variant = make_judge(spec, pool, mode, "`rlaif audit`", adjust=_with_template(template))
            folder = out / "templates" / Path(template).stem
            readings[template] = run_audit(items, str(args.gold), folder, JudgeSource(variant), options,
                                           {"judge": f"{variant.name} with template {template}"}).records
        if len(readings) < 2:
            raise InputError("--templates: give at least one template other than the judge's own "
                             f"({identity.template}), e.g. judge/pairwise-paraphrase-1.jinja")
        found["templates"] = readings_agreement(readings, args.tie_margin, args.bootstrap, args.seed)
        found["templates"]["folders"] = {t: str(out / "templates" / Path(t).stem) for t in readings if t != identity.template}
    return found


def _redraw(offset: int):
    """A retest repeat: the judge with its principle seed moved (another draw, other sampled rationales)."""
    def adjust(config):
        return config.model_copy(update={"principles": config.principles.model_copy(update={"seed": config.principles.seed + offset})})
    return adjust


def _with_template(template: str):
    def adjust(config):
        return config.model_copy(update={"template": template})
    return adjust


def _variation_sections(metrics: dict, extra: dict[str, Any]) -> list[str]:
    from rlaif.audit.variation import variation_markdown

    human = (metrics.get("agreement") or {}).get("accuracy_no_ties")
    lines: list[str] = []
    for kind in ("retest", "templates"):
        if kind in extra:
            metrics[kind] = extra[kind]
            lines += variation_markdown(kind, extra[kind], human)
    if "templates" in extra:
        lines += ["Each wording's own audit is in " + ", ".join(extra["templates"]["folders"].values())
                  + "; compare two of them item by item with `rlaif audit compare A B`.", ""]
    return lines


def _cmd_compare(args: argparse.Namespace) -> int:
    from rlaif.audit.compare import compare_audits, write_compare

    if len(args.sides) != 2:
        raise InputError("rlaif audit compare needs two audits: `rlaif audit compare A B` with A and B audit folders "
                         "(or their metrics.json), or two judges and --gold FILE")
    out = args.out or Path("runs/audit-compare")
    folders = []
    for side, given in zip("ab", args.sides):
        path = Path(given)
        if path.is_dir() or path.name == "metrics.json":
            folders.append(path)
            continue
        if not args.gold:
            raise InputError(f"{given} is not an audit folder; to audit two judges give --gold FILE "
                             "(`rlaif audit compare JUDGE_A JUDGE_B --gold FILE`)")
        folder = out / f"{side}-{path.stem}"
        _audit(args, given, folder, variations=False)
        folders.append(folder)
    result = compare_audits(folders[0], folders[1])
    files = write_compare(out, result)
    print(files["compare.md"].read_text().split("## By category")[0].split("## Plots")[0])
    print("files: " + ", ".join(str(p) for p in files.values()))
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
        "audit", parents=[shared], help="measure how far a judge agrees with a human gold set; compare two judges",
        usage="rlaif audit --gold FILE [--judge J | --labels RUN] [options]\n       rlaif audit compare A B [--gold FILE] [--out DIR]",
        description="Judge every gold pair with the bulk-labeling code (both orders; pointwise judges score both responses), "
                    "or match the labels of an earlier `rlaif label` run (--labels), then report agreement (accuracy, Cohen's "
                    "kappa, the human-human ceiling, trivial baselines), calibration (ECE, Brier, log-loss, reliability diagram, "
                    "cross-validated temperature scaling, coverage), and biases (position, length, per category and principle), "
                    "each with a 95% interval (docs/audit.md says how far each holds). Writes metrics.json (with fingerprints "
                    "of the judge and the gold set), items.jsonl, report.md, report.html and PNG plots. --retest K measures the "
                    "judge against itself (the noise "
                    "floor); --templates measures how far a reworded template moves its verdicts; --baseline gates against an "
                    "earlier audit; --min-kappa / --min-accuracy gate on absolute bars: each gate exits 1 when it fails, for CI. "
                    "`rlaif audit compare A B` compares two audits (or two judges) item by item: paired differences with "
                    "intervals, an exact McNemar test and a plain verdict.")
    p.add_argument("action", nargs="?", choices=["compare"], help="compare: compare two audits A B item by item")
    p.add_argument("sides", nargs="*", metavar="A B",
                   help="compare: two audit folders (or metrics.json files), or two judges to audit on --gold first")
    p.add_argument("--gold", type=existing_file,
                   help="gold file: canonical JSONL, PandaLM or LLMBar JSON, or any file with --mapping")
    p.add_argument("--format", default="auto", choices=["auto", "canonical", "pandalm", "llmbar", "mapped"],
                   help="gold format (default: detect)")
    p.add_argument("--mapping", type=existing_file,
                   help="YAML column mapping for other gold formats (fields of rlaif.audit.gold.GoldMapping)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--judge", default="smollm2-pairwise",
                        help="judge to run on the gold pairs: pairwise, ensemble, self-consistency or pointwise (default: %(default)s)")
    source.add_argument("--labels", type=existing_folder,
                        help="a `rlaif label` run folder whose judgments to audit instead of judging again")
    p.add_argument("--out", type=out_folder, default=None,
                   help="report folder; rerunning resumes the judging (default: runs/audit; compare: runs/audit-compare)")
    p.add_argument("--limit", type=positive_int, help="audit only the first N gold items")
    p.add_argument("--baseline", type=existing_path, metavar="OLD/metrics.json",
                   help="an earlier audit (folder or metrics.json): report the change against it, paired on the items both "
                        "judged, naming whether the judge or the gold set changed; exit 1 when agreement dropped by more "
                        "than the noise allows")
    p.add_argument("--max-drop", type=fraction, default=0.0,
                   help="--baseline: also tolerate a drop of this much beyond the noise (default: %(default)s)")
    p.add_argument("--retest", type=int, metavar="K",
                   help="judge every item K times (K >= 2) under what legitimately varies (another principle draw, other "
                        "sampled rationales) and report the judge's agreement and kappa with itself")
    p.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                   help="audit the judge under each of these templates too (e.g. judge/pairwise-paraphrase-1.jinja "
                        "judge/pairwise-paraphrase-2.jinja) and report the spread of agreement and the share of items whose "
                        "verdict changes with the wording")
    p.add_argument("--min-kappa", type=float, help="exit 1 if Cohen's kappa is below this")
    p.add_argument("--min-accuracy", type=float, help="exit 1 if accuracy (no ties) is below this")
    p.add_argument("--tie-margin", type=float, default=0.0, help="judge says tie when |P(A)-0.5| <= this (default: %(default)s)")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples for the intervals (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and cross-validation folds")
    p.add_argument("--batch-size", type=positive_int, default=16, help="pairs per judge batch (default: %(default)s)")
    p.set_defaults(func=cmd_audit)
    _human_parsers(sub, shared)


def _human_parsers(sub, shared: argparse.ArgumentParser) -> None:
    """`rlaif humans` and `rlaif hygiene`."""
    p = sub.add_parser(
        "humans", parents=[shared], help="plan human labels: sample items to annotate, import the answers, size the sample",
        description="sample: pick labeled pairs of a run for human annotation (uniform, stratified by judge confidence "
                    "and principle, or least confident first) into a blind JSONL/CSV file; import: turn the filled-in "
                    "file into a canonical gold set; size: how many human labels bound the agreement interval.")
    p.add_argument("action", choices=["sample", "import", "size"])
    p.add_argument("--run", type=existing_folder, help="sample: the run folder with preferences.jsonl")
    p.add_argument("--n", type=positive_int, default=100, help="sample: how many items (default: %(default)s)")
    p.add_argument("--strategy", default="stratified", choices=["uniform", "stratified", "least-confident"],
                   help="sample: (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=out_file, default="annotate.jsonl",
                   help="sample: annotation file (.jsonl or .csv); import: gold JSONL to write")
    p.add_argument("--annotations", type=existing_file, help="import: the filled-in annotation file")
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
