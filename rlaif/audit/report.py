"""Write an audit: metrics.json, report.md, report.html and the plots as PNG."""

from __future__ import annotations

import html
import json
from pathlib import Path

from markdown_it import MarkdownIt

from rlaif.audit.resampling import MIN_UNITS

__all__ = ["write_report", "gate", "markdown_html", "plot_section"]


def _fmt(entry) -> str:
    if isinstance(entry, dict) and "value" in entry:
        lo, hi = entry["ci95"]
        value = "n/a" if entry["value"] is None else f"{entry['value']:.3f}"
        return value if lo is None else f"{value} [{lo:.3f}, {hi:.3f}]"
    return "n/a" if entry is None else (f"{entry:.3f}" if isinstance(entry, float) else str(entry))


def _plots(metrics: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = metrics.get("calibration", {})
    made = []
    if cal.get("reliability"):
        _reliability_plot(plt, cal, out / "reliability.png")
        made.append("reliability.png")
    if cal.get("coverage_curve"):
        _coverage_plot(plt, cal, out / "coverage.png", (metrics.get("baselines") or {}).get("rules") or {})
        made.append("coverage.png")
    return made


def _reliability_plot(plt, cal: dict, path: Path) -> None:
    """Both reliability curves over the item counts per bin; bins with too few items drawn hollow."""
    from matplotlib.lines import Line2D

    k = cal.get("reliability_sparse_below", 10)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfect calibration")
    curves = (("reliability", "judge as is", "C0", -1, "o"),
              ("reliability_after_temperature", "after temperature scaling (out of fold)", "C1", 1, "s"))
    for key, label, color, side, marker in curves:
        bins = [b for b in cal.get(key, []) if b["count"]]
        z = 3 if side < 0 else 2
        ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "-", marker=marker, ms=0, color=color, lw=1.2,
                label=label, zorder=z)
        for b in bins:
            ax.plot(b["mean_confidence"], b["accuracy"], marker, ms=8 if side < 0 else 6, color=color, zorder=z,
                    markerfacecolor="white" if b.get("sparse") else color)
        all_bins = cal.get(key, [])
        centres = [(b["lo"] + b["hi"]) / 2 + side * 0.011 for b in all_bins]
        hist.bar(centres, [b["count"] for b in all_bins], width=0.021, color=color, alpha=0.8)
        for x, b in zip(centres, all_bins):
            if b["count"]:
                hist.annotate(str(b["count"]), (x, b["count"]), ha="center", va="bottom", fontsize=6)
    handles, labels = ax.get_legend_handles_labels()
    handles = [Line2D([], [], color=h.get_color(), marker=h.get_marker(), ms=6) if h.get_marker() not in (None, "None", "") else h
               for h in handles]
    handles.append(Line2D([], [], ls="", marker="o", ms=7, color="grey", markerfacecolor="white"))
    labels.append(f"hollow: bin with < {k} items (too few to read)")
    ax.legend(handles, labels, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncol=2)  # above the plot, off the points
    ax.set(ylabel="agreement with humans", xlim=(0.5, 1), ylim=(0, 1.05))
    fig.suptitle("Reliability diagram", fontsize=11)
    hist.axhline(k, color="grey", ls=":", lw=1, label=f"{k} items: fewer is too few to read")
    hist.legend(fontsize=6, loc="best")
    top = max([b["count"] for key, *_ in curves for b in cal.get(key, [])] + [k])
    hist.set(xlabel="judge confidence (max of P(A), P(B)), bins of 0.05", ylabel="items per bin", ylim=(0, top * 1.25))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _coverage_plot(plt, cal: dict, path: Path, rules: dict | None = None) -> None:
    """Agreement on the items kept at each threshold, with Wilson intervals, beside chance and the trivial baselines'
    agreement on all the gold A/B items (`rules`: metrics["baselines"]["rules"]); the title says how thresholds were
    chosen."""
    rows = [r for r in cal["coverage_curve"] if r["accuracy"] is not None]
    quantile = cal.get("coverage_rule") == "quantile"
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    x, y = [r["coverage"] for r in rows], [r["accuracy"] for r in rows]
    lo = [r["accuracy"] - r["accuracy_ci95"][0] if r.get("accuracy_ci95") and r["accuracy_ci95"][0] is not None else 0 for r in rows]
    hi = [r["accuracy_ci95"][1] - r["accuracy"] if r.get("accuracy_ci95") and r["accuracy_ci95"][1] is not None else 0 for r in rows]
    ax.errorbar(x, y, yerr=[lo, hi], fmt="o-", capsize=3, lw=1.2, label="agreement on kept items (95% CI: Wilson, prompt clusters)")
    ax.axhline(0.5, color="grey", ls=":", lw=1, label="chance (0.5)")
    styles = {"always_longer": ("C2", "--"), "always_shorter": ("C3", "-."), "always_first_shown": ("C4", (0, (1, 2)))}
    for key, (color, style) in styles.items():
        baseline = (rules or {}).get(key) or {}
        value = baseline.get("accuracy_no_ties", {}).get("value")
        if value is not None:
            ax.axhline(value, color=color, ls=style, lw=1, label=f"{baseline['label']}: {value:.3f} (all gold A/B items)")
    last, side = None, 1
    for r in rows:  # threshold labels: skip a point crowding the last labeled one (the table lists all), alternate sides
        if last is not None and abs(r["coverage"] - last) < 0.05:
            continue
        ax.annotate(f"{r['threshold']:.3f}" if quantile else f"{r['threshold']:.2f}", (r["coverage"], r["accuracy"]), fontsize=6.5,
                    xytext=(5, 5 if side > 0 else -11), textcoords="offset points", ha="left")
        last, side = r["coverage"], -side
    rule = "thresholds at confidence quantiles (keep 100%, 90%, ..., 10%)" if quantile else "fixed thresholds 0.50 ... 0.95"
    ax.set(xlabel="coverage (share of items the judge keeps)", ylabel="agreement on kept items", xlim=(0, 1.08), ylim=(0, 1.02),
           title=f"Abstaining below a confidence threshold\n{rule}")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _baseline_lines(metrics: dict) -> list[str]:
    """The judge beside trivial rules scored the same way on the same items, and the definitions used."""
    base, ag = metrics.get("baselines"), metrics.get("agreement") or {}
    if not base:
        return []
    cells = lambda row: " | ".join(_fmt(row.get(k)) for k in ("accuracy_no_ties", "accuracy_with_ties", "cohen_kappa"))  # noqa: E731
    lc, defs = base["length_controlled"], base["definitions"]
    lines = ["### Beside trivial baselines (the same items, the same metrics and bootstrap)", "",
             "| predictor | accuracy_no_ties [95% CI] | accuracy_with_ties [95% CI] | cohen_kappa [95% CI] |", "|---|---|---|---|",
             f"| judge | {cells(ag)} |"]
    lines += [f"| {row['label']} | {cells(row)} |" for row in base["rules"].values()]
    lines += [f"| length-controlled judge | {_fmt(lc['accuracy_no_ties'])} | - | - |", ""]
    ties = base["rules"]["always_longer"]["verdicts"].get("tie", 0)
    lines += [f"Lengths are {defs['lengths']}. \"Always the longer\" / \"always the shorter\" say tie when both responses "
              f"have the same length ({ties} items here: wrong in accuracy_no_ties, half credit in accuracy_with_ties). "
              f"\"Always the first shown (A)\" {defs['always_first_shown']}.", ""]
    coef = lc.get("coefficients")
    fitted = (f" Fitted here: b_s = {coef['longer_side']:.3f}, b_d = {coef['length_difference']:.3f} (sd = {lc['length_sd']:.0f} "
              f"characters), a = {coef['intercept']:.3f}, g = {coef['gold_is_a']:.3f}; humans preferred the longer response on "
              f"{lc['n_gold_prefers_longer']} items, the shorter on {lc['n_gold_prefers_shorter']}, equal lengths on "
              f"{lc['n_equal_length']}." if coef else
              " Not estimable on this set (no gold A/B item, or humans preferred the same side, longer or shorter, "
              "on every item whose responses differ in length).")
    lines += [f"Length-controlled judge: {defs['length_controlled']}.{fitted}", ""]
    return lines


LENGTH_NOTE = ("The length flag compares how often the judge and the humans pick the longer response; the length-controlled "
               "fit measures the judge's lean to the longer response given the human label (b_s for a small length difference, "
               "b_s + b_d for the largest). The two can point opposite ways: a judge that agrees with the humans only in part "
               "picks the longer response at a rate between the humans' and 0.5 even with no taste for length of its own, so "
               "where humans mostly prefer the longer response the flag reads \"less than the humans\" while the fit can "
               "still find a lean to the longer one (and the reverse where humans mostly prefer the shorter).")


def _length_note(metrics: dict) -> list[str]:
    """What the length flag and the length-controlled fit each measure, and whether they point opposite ways here: the
    flag's gap has one sign and the fit leans the other way at every length difference (b_s and b_s + b_d)."""
    flag = ((metrics.get("biases") or {}).get("flags") or {}).get("length_bias") or {}
    coef = ((metrics.get("baselines") or {}).get("length_controlled") or {}).get("coefficients")
    if flag.get("value") is None:
        return []
    gap, note = flag["value"], LENGTH_NOTE
    near, far = (coef["longer_side"], coef["longer_side"] + coef["length_difference"]) if coef else (0.0, 0.0)
    lean = 1 if near > 0 and far > 0 else -1 if near < 0 and far < 0 else 0
    if lean and gap * lean < 0:
        note += (f" Here they point opposite ways: the judge picks the longer response {'more' if gap > 0 else 'less'} often "
                 f"than the humans ({gap:+.3f}), while given the human label it leans to the "
                 f"{'longer' if lean > 0 else 'shorter'} response (b_s = {near:.3f}, b_s + b_d = {far:.3f}).")
    return [note, ""]


def _calibration_head(cal: dict) -> list[str]:
    """ECE, Brier and log-loss with their intervals, beside temperature scaling and the constant that always says the
    base rate (calibrated by construction, knows nothing), the AUC, and whether P(A) carries information."""
    ts, base = cal["temperature_scaling"], cal.get("vs_base_rate") or {}
    b = base.get("base_rate")
    constant = "base-rate constant" + (f" (P(A) = {b:.3f} on every item)" if b is not None else "")
    lines = ["## Calibration of the soft labels", "",
             f"| metric | as is [95% CI] | after temperature scaling (out of fold) | {constant} |", "|---|---|---|---|"]
    lines += [f"| {k} | {_fmt(cal[k])} | {_fmt(ts['after_out_of_fold'].get(k))} | {_fmt(base.get(k))} |"
              for k in ("ece", "brier", "log_loss")]
    if cal.get("auc"):
        lines.append(f"| auc (gold A ranked above gold B; 0.5 = chance) | {_fmt(cal['auc'])} | - | 0.500 |")
    info = cal.get("information") or {}
    if info.get("verdict"):
        lines += ["", info["verdict"], "", f"Rule: {info['rule']}."]
    return lines


def _calibration_tables(cal: dict) -> list[str]:
    """The reliability bins with their item counts, and coverage vs agreement with the rule that chose the thresholds."""
    k = cal.get("reliability_sparse_below")
    after = {(b["lo"], b["hi"]): b for b in cal.get("reliability_after_temperature", [])}
    lines = [f"Reliability bins (top-label confidence; * marks a bin with fewer than {k} items, too few to read):", "",
             "| confidence bin | n | mean confidence | agreement | n after temperature scaling | agreement after |",
             "|---|---|---|---|---|---|"]
    for b in cal.get("reliability", []):
        a = after.get((b["lo"], b["hi"]), {})
        if b["count"] or a.get("count"):
            star = lambda x: "*" if x.get("sparse") and x.get("count") else ""  # noqa: E731
            lines.append(f"| {b['lo']:.2f}-{b['hi']:.2f} | {b['count']}{star(b)} | {_fmt(b['mean_confidence'])} | {_fmt(b['accuracy'])} "
                         f"| {a.get('count', 0)}{star(a)} | {_fmt(a.get('accuracy'))} |")
    return lines + [""] + _coverage_table(cal)


def _coverage_table(cal: dict) -> list[str]:
    """Coverage vs agreement, with the rule that chose the thresholds, the judge's ties counted apart and the interval."""
    quantile = cal.get("coverage_rule") == "quantile"
    columns = ["threshold", *(["target share kept (of decided items)"] if quantile else []), "coverage", "n kept",
               "agreement [95% CI: Wilson, prompt clusters]"]
    ties = (f" A judge tie is an abstention, never kept nor scored as A or B: judge ties {cal['coverage_judge_ties']} "
            f"of {cal.get('n')} items." if "coverage_judge_ties" in cal else "")
    lines = ["Coverage vs agreement (abstain below a confidence threshold); thresholds: "
             f"{cal.get('coverage_rule_text', 'fixed')}.{ties}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    rows = cal.get("coverage_curve", [])
    for r in rows:
        share = f" {r['keep_share']:.0%} |" if quantile and r.get("keep_share") is not None else (" - |" if quantile else "")
        threshold = f"{r['threshold']:.4f}" if quantile else f"{r['threshold']:.2f}"
        agreement = _fmt({"value": r["accuracy"], "ci95": r.get("accuracy_ci95", [None, None])})
        lines.append(f"| {threshold} |{share} {_fmt(r['coverage'])} | {r['n']} | {agreement} |")
    if cal.get("coverage_interval"):
        lines += ["", f"Agreement intervals: {cal['coverage_interval']}."]
    if any(r["accuracy"] is not None and (r.get("accuracy_ci95") or [None])[0] is None for r in rows):
        lines += ["", f"No interval where the kept items share fewer than {MIN_UNITS} prompts: so few prompts cannot "
                  "estimate the spread."]
    return lines + [""]


def _unit_text(unit: str) -> str:
    """"item" -> "items"; "prompt (170 clusters)" -> "whole prompts (170 clusters: ... resampled together)"."""
    if unit.startswith("prompt"):
        note = " clusters: gold items sharing a prompt are resampled together)"
        return "whole prompts" + unit[len("prompt"):].replace(" clusters)", note)
    return "items"


def _flag_line(name: str, flag: dict, bias: dict, kind: str | None) -> str:
    """One bias flag; position bias reads n/a where it was not measured (no single-order reading: a pointwise judge
    scores each response alone, so no order is ever shown), never "not flagged"."""
    if name == "position_bias" and bias.get("first_position_rate") is None:
        why = ("pointwise: the judge scores each response alone and never sees the two in an order" if kind == "pointwise"
               else "not measured: no single-order reading")
        return f"- position bias: n/a ({why})"
    return (f"- {name.replace('_', ' ')}: {'FLAGGED' if flag['flagged'] else 'not flagged'}; {flag['statistic']} "
            f"{_fmt(flag)} ({flag['rule']})")


def _markdown(metrics: dict, meta: dict, plots: list[str], sections: list[str]) -> str:
    ag, cal, bias, hum = (metrics.get(k) or {} for k in ("agreement", "calibration", "biases", "humans"))
    lines = [
        f"# Judge audit: {meta.get('judge', '?')} on {meta.get('gold', '?')}", "",
        f"Gold items: {metrics['n_gold']}; judged: {metrics['n_judged']}; unlabeled: {metrics['n_unlabeled']}"
        f"{' ' + str(metrics['unlabeled_reasons']) if metrics['unlabeled_reasons'] else ''}; "
        f"invalid gold rows: {meta.get('invalid_rows', 0)}.", "",
        f"Tie policy: {metrics['tie_policy']}. Intervals are 95%, from {metrics['bootstrap_resamples']} bootstrap resamples "
        f"of {_unit_text(metrics.get('bootstrap_unit', 'item'))}; the ECE and log-loss intervals are described under calibration.",
        "",
        "## Agreement with the human labels", "",
    ]
    verdict = ((metrics.get("baselines") or {}).get("judge_vs_best_length_rule") or {}).get("verdict")
    lines += [verdict, ""] if verdict else []
    lines += ["| metric | value [95% CI] |", "|---|---|"]
    for key in ("accuracy_no_ties", "accuracy_with_ties", "cohen_kappa"):
        lines.append(f"| {key} | {_fmt(ag.get(key))} |")
    lines += [f"| items (non-tie) | {ag.get('n')} ({ag.get('n_non_tie')}) |",
              f"| judge verdicts | {metrics.get('judge_verdicts')} |", f"| gold labels | {metrics.get('gold_labels')} |", ""]
    lines += _baseline_lines(metrics)
    if hum:
        lines += ["## Human-human ceiling (same items)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in hum.items()]
        lines += ["", "`loo_accuracy_no_ties` is each annotator against the majority of the others: the number to "
                  "compare with the judge's `accuracy_no_ties`.", ""]
    if cal.get("ece"):
        ts = cal["temperature_scaling"]
        lines += _calibration_head(cal)
        bound = ts["temperature_all_items"] >= ts.get("temperature_search_bounds", [0, 20])[1] * 0.999
        note = (" The fit ran to the upper bound of its search: flattening every probability to 0.5 fits best, i.e. the "
                "judge's soft labels carry no usable signal on this set." if bound else "")
        lines += ["", f"Temperature fitted on all items: {ts['temperature_all_items']}; per fold: {ts['fold_temperatures']}. "
                  f"{ts['method']}.{note}", ""]
        methods = [f"{name}: {cal[key]}" for name, key in (("ECE", "ece_interval_method"), ("log-loss", "log_loss_method"))
                   if cal.get(key)]
        lines += [f"Intervals of {'; '.join(methods)}.", ""] if methods else []
        lines += _calibration_tables(cal)
    lines += ["## Biases", "",
              f"- Position consistency (the verdict survives swapping the order): {_fmt(bias.get('position_consistency'))} "
              f"over {bias.get('n_both_orders')} items",
              f"- Share of single-order verdicts for the response shown first: {_fmt(bias.get('first_position_rate'))} "
              "(0.5 = no position bias)",
              f"- Length: judge prefers the longer response {_fmt(bias.get('length', {}).get('judge_prefers_longer'))}, "
              f"humans {_fmt(bias.get('length', {}).get('human_prefers_longer'))} (n={bias.get('length', {}).get('n')})"]
    kind = ((metrics.get("fingerprint") or {}).get("judge") or {}).get("kind")
    lines += [_flag_line(name, flag, bias, kind) for name, flag in (bias.get("flags") or {}).items()]
    lines += ["", *_length_note(metrics)]
    for title, key in (("By category", "by_category"), ("By principle", "by_principle")):
        table = metrics.get(key) or {}
        lines += [f"## {title}", "", "| group | items (gold ties included) | gold A/B items (accuracy over these) "
                  "| accuracy_no_ties [Wilson 95% CI] | cohen_kappa (all items) |", "|---|---|---|---|---|"]
        lines += [f"| {g} | {row['n']} | {row.get('n_non_tie', '-')} | "
                  f"{_fmt({'value': row['accuracy_no_ties'], 'ci95': row['accuracy_no_ties_ci95']})} | "
                  f"{_fmt(row['cohen_kappa'])} |" for g, row in table.items()]
        if any(row["accuracy_no_ties"] is not None and row["accuracy_no_ties_ci95"][0] is None for row in table.values()):
            lines += ["", f"No interval where a group's items share fewer than {MIN_UNITS} prompts: so few prompts cannot "
                      "estimate the spread."]
        lines.append("")
    if meta.get("gate"):
        lines += ["## Gate", "", f"{meta['gate']['verdict']}: {meta['gate']['detail']}", ""]
    lines += sections
    lines += plot_section(plots)
    return "\n".join(lines) + "\n"


def plot_section(plots: list[str]) -> list[str]:
    """The plots, last and under their own heading: a reader of the markdown's sections (the terminal) stops before
    them, the HTML page shows them."""
    return ["## Plots", "", *(line for p in plots for line in (f"![{p}]({p})", ""))] if plots else []


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
"""CommonMark with tables; raw HTML is off, so text from a gold file (a category, a prompt) is escaped, never markup."""


def markdown_html(markdown: str, title: str) -> str:
    """A self-contained page: the markdown rendered (headings, emphasis, lists, tables, images)."""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.2em .6em}th{background:#f4f4f4}img{max-width:100%}")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{_MARKDOWN.render(markdown)}</body></html>\n"


def gate(metrics: dict, min_kappa: float | None, min_accuracy: float | None) -> dict | None:
    """Compare with the bars; 'fail' when a metric is below its bar or cannot be computed."""
    if min_kappa is None and min_accuracy is None:
        return None
    ag = metrics.get("agreement") or {}
    checks = []
    for name, bar, key in (("cohen_kappa", min_kappa, "cohen_kappa"), ("accuracy_no_ties", min_accuracy, "accuracy_no_ties")):
        if bar is not None:
            value = (ag.get(key) or {}).get("value")
            checks.append((name, value, bar, value is not None and value >= bar))
    ok = all(c[3] for c in checks)
    detail = "; ".join(f"{n} {('n/a' if v is None else f'{v:.3f}')} {'>=' if good else '<'} {b}" for n, v, b, good in checks)
    return {"verdict": "pass" if ok else "fail", "detail": detail, "passed": ok}


def write_report(out: Path, metrics: dict, meta: dict, sections: list[str] | None = None) -> dict[str, Path]:
    """The report files; `sections` are markdown lines added before the plots (retest, templates, baseline)."""
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(metrics, out)
    (out / "metrics.json").write_text(json.dumps({**meta, **metrics, "plots": plots}, indent=2, default=str) + "\n")
    markdown = _markdown(metrics, meta, plots, sections or [])
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(markdown_html(markdown, f"Judge audit: {meta.get('judge')}"))
    return {name: out / name for name in ("metrics.json", "report.md", "report.html", *plots)}
