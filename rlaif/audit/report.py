"""Write an audit: metrics.json, report.md, report.html and the plots as PNG."""

from __future__ import annotations

import html
import json
from pathlib import Path

__all__ = ["write_report", "gate"]


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
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.plot([0.5, 1], [0.5, 1], "k--", lw=1, label="perfect calibration")
        for key, label in (("reliability", "judge as is"), ("reliability_after_temperature", "after temperature scaling (out of fold)")):
            bins = [b for b in cal[key] if b["count"]]
            ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=label)
        ax.set(xlabel="judge confidence (max of P(A), P(B))", ylabel="agreement with humans", xlim=(0.5, 1), ylim=(0, 1),
               title="Reliability diagram")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=110)
        plt.close(fig)
        made.append("reliability.png")
    if cal.get("coverage_curve"):
        rows = [r for r in cal["coverage_curve"] if r["accuracy"] is not None]
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.plot([r["coverage"] for r in rows], [r["accuracy"] for r in rows], "o-")
        for r in rows:
            ax.annotate(f"{r['threshold']:.2f}", (r["coverage"], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="coverage (share of items the judge keeps)", ylabel="agreement on kept items", xlim=(0, 1.02), ylim=(0, 1),
               title="Abstaining below a confidence threshold")
        fig.tight_layout()
        fig.savefig(out / "coverage.png", dpi=110)
        plt.close(fig)
        made.append("coverage.png")
    return made


def _markdown(metrics: dict, meta: dict, plots: list[str]) -> str:
    ag, cal, bias, hum = (metrics.get(k) or {} for k in ("agreement", "calibration", "biases", "humans"))
    lines = [
        f"# Judge audit: {meta.get('judge', '?')} on {meta.get('gold', '?')}", "",
        f"Gold items: {metrics['n_gold']}; judged: {metrics['n_judged']}; unlabeled: {metrics['n_unlabeled']}"
        f"{' ' + str(metrics['unlabeled_reasons']) if metrics['unlabeled_reasons'] else ''}; "
        f"invalid gold rows: {meta.get('invalid_rows', 0)}.", "",
        f"Tie policy: {metrics['tie_policy']}. Intervals are bootstrap 95% ({metrics['bootstrap_resamples']} resamples).", "",
        "## Agreement with the human labels", "", "| metric | value [95% CI] |", "|---|---|",
    ]
    for key in ("accuracy_no_ties", "accuracy_with_ties", "cohen_kappa"):
        lines.append(f"| {key} | {_fmt(ag.get(key))} |")
    lines += [f"| items (non-tie) | {ag.get('n')} ({ag.get('n_non_tie')}) |",
              f"| judge verdicts | {metrics.get('judge_verdicts')} |", f"| gold labels | {metrics.get('gold_labels')} |", ""]
    if hum:
        lines += ["## Human-human ceiling (same items)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in hum.items()]
        lines += ["", "`loo_accuracy_no_ties` is each annotator against the majority of the others: the number to "
                  "compare with the judge's `accuracy_no_ties`.", ""]
    if cal.get("ece"):
        ts = cal["temperature_scaling"]
        lines += ["## Calibration of the soft labels", "",
                  "| metric | as is [95% CI] | after temperature scaling (out of fold) |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(cal[k])} | {_fmt(ts['after_out_of_fold'].get(k))} |" for k in ("ece", "brier", "log_loss")]
        bound = ts["temperature_all_items"] >= ts.get("temperature_search_bounds", [0, 20])[1] * 0.999
        note = (" The fit ran to the upper bound of its search: flattening every probability to 0.5 fits best, i.e. the "
                "judge's soft labels carry no usable signal on this set." if bound else "")
        lines += ["", f"Temperature fitted on all items: {ts['temperature_all_items']}; per fold: {ts['fold_temperatures']}. "
                  f"{ts['method']}.{note}", "", "Coverage vs agreement (abstain below a confidence threshold):", "",
                  "| threshold | coverage | agreement | n |", "|---|---|---|---|"]
        lines += [f"| {r['threshold']} | {_fmt(r['coverage'])} | {_fmt(r['accuracy'])} | {r['n']} |" for r in cal["coverage_curve"]]
        lines.append("")
    lines += ["## Biases", "",
              f"- Position consistency (the verdict survives swapping the order): {_fmt(bias.get('position_consistency'))} "
              f"over {bias.get('n_both_orders')} items",
              f"- Share of single-order verdicts for the response shown first: {_fmt(bias.get('first_position_rate'))} "
              "(0.5 = no position bias)",
              f"- Length: judge prefers the longer response {_fmt(bias.get('length', {}).get('judge_prefers_longer'))}, "
              f"humans {_fmt(bias.get('length', {}).get('human_prefers_longer'))} (n={bias.get('length', {}).get('n')})", ""]
    for title, key in (("By category", "by_category"), ("By principle", "by_principle")):
        table = metrics.get(key) or {}
        lines += [f"## {title}", "", "| group | n | accuracy_no_ties [Wilson 95% CI] | cohen_kappa |", "|---|---|---|---|"]
        lines += [f"| {g} | {row['n']} | {_fmt({'value': row['accuracy_no_ties'], 'ci95': row['accuracy_no_ties_ci95']})} | "
                  f"{_fmt(row['cohen_kappa'])} |" for g, row in table.items()]
        lines.append("")
    if meta.get("gate"):
        lines += ["## Gate", "", f"{meta['gate']['verdict']}: {meta['gate']['detail']}", ""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _html(markdown: str, title: str) -> str:
    """A self-contained page: tables and images rendered from the markdown lines."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<img src="{html.escape(src)}" alt="{html.escape(src)}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td{border:1px solid #ccc;padding:.2em .6em}")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"


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


def write_report(out: Path, metrics: dict, meta: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(metrics, out)
    (out / "metrics.json").write_text(json.dumps({**meta, **metrics, "plots": plots}, indent=2, default=str) + "\n")
    markdown = _markdown(metrics, meta, plots)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, f"Judge audit: {meta.get('judge')}"))
    return {name: out / name for name in ("metrics.json", "report.md", "report.html", *plots)}
