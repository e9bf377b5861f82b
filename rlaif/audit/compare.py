"""Two audits of the same gold items, compared item by item: `rlaif audit compare` and `rlaif audit --baseline`.

Every audit folder holds `items.jsonl`, one row per gold item (its content hash, prompt cluster, category, gold
label and the judge's P(A better)). Two audits are paired on the items both judged (same content hash), so
everything that does not change between them (the item's difficulty, its prompt) cancels out:

- differences B - A in accuracy (no ties) and Cohen's kappa, with paired 95% intervals: the difference +- Student's t
  times its jackknife standard error, leaving out one prompt at a time when gold items share prompts (else one
  item, or one of 400 groups of items);
- an exact McNemar test on the discordant items (one judge right, the other wrong);
- Brier and log-loss differences on the soft labels (non-tie gold items), the same kind of interval;
- per-category differences with intervals;
- a plain verdict, and when no difference is detectable, about how many items would detect the observed
  one with 80% power (the McNemar sample size from the discordance rate, Connor 1987).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from rlaif.audit import metrics as M
from rlaif.audit import resampling as R
from rlaif.audit.fingerprint import file_named_ids, what_changed
from rlaif.audit.judging import AuditRecord
from rlaif.audit.report import markdown_html, plot_section
from rlaif.audit.resampling import Resamples
from rlaif.errors import InputError
from rlaif.records import content_key

__all__ = ["ITEMS", "item_rows", "load_audit", "pair_rows", "unpaired_counts", "compare_arrays", "mcnemar_exact", "paired_sample_size",
           "compare_audits", "baseline_check", "compare_markdown", "write_compare"]

ITEMS = "items.jsonl"
MIN_UNITS = R.MIN_UNITS
"""Fewest resampling units (prompts, or items when no prompt repeats) a per-category interval is drawn from."""


# ---------------------------------------------------------------- per-item rows

def item_rows(records: list[AuditRecord], tie_margin: float = 0.0) -> list[dict]:
    """One row per gold item: what `items.jsonl` holds, and what comparisons pair on."""
    rows = []
    for r in records:
        p = r.p_a if r.labeled else None
        rows.append({
            "id": r.item.id, "item_sha": content_key(r.item.model_dump(mode="json")), "cluster": content_key(r.item.prompt),
            "category": r.item.category, "label": r.item.label, "p_a": p,
            "verdict": None if p is None else str(M.verdicts_from_p([p], tie_margin)[0]),
            "len_a": len(r.item.response_a), "len_b": len(r.item.response_b),
            "reason": None if r.labeled else (r.judgment.reason if r.judgment else "not judged"),
        })
    return rows


def load_audit(path: str | Path) -> tuple[dict, list[dict], Path]:
    """(metrics.json, items.jsonl rows, folder) of an audit folder or of its metrics.json."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    metrics_path = folder / "metrics.json" if path.is_dir() else path
    if not metrics_path.is_file():
        raise InputError(f"{path}: no metrics.json there; give an audit folder written by `rlaif audit` or its metrics.json")
    metrics = json.loads(metrics_path.read_text())
    items_path = folder / ITEMS
    rows = [json.loads(line) for line in items_path.read_text().splitlines() if line.strip()] if items_path.is_file() else []
    return metrics, rows, folder


def pair_rows(rows_a: list[dict], rows_b: list[dict]) -> list[tuple[dict, dict]]:
    """Items judged in both audits (a label or a tie in each), matched by content hash, in A's order."""
    by_sha = {r["item_sha"]: r for r in rows_b if r.get("p_a") is not None}
    return [(r, by_sha[r["item_sha"]]) for r in rows_a if r.get("p_a") is not None and r["item_sha"] in by_sha]


def unpaired_counts(rows_a: list[dict], rows_b: list[dict]) -> dict[str, int]:
    """Distinct items (by content hash, each counted once) judged in one audit and not in the other, and those of
    both audits that neither judged."""
    judged_a, judged_b = ({r["item_sha"] for r in rows if r.get("p_a") is not None} for rows in (rows_a, rows_b))
    shared = {r["item_sha"] for r in rows_a} & {r["item_sha"] for r in rows_b}
    only_a, only_b = len(judged_a - judged_b), len(judged_b - judged_a)
    return {"unpaired_items": only_a + only_b, "judged_by_a_only": only_a, "judged_by_b_only": only_b,
            "judged_by_neither": len(shared - judged_a - judged_b)}


# ---------------------------------------------------------------- statistics

def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant items split a_only / b_only under Binomial(n, 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_sample_size(p_discordant: float, difference: float, confidence: float = 0.95, power: float = 0.8) -> int | None:
    """Paired items a McNemar test needs to detect `difference` with `power`, when a share `p_discordant` of items
    is discordant (Connor 1987); None when the difference is 0 or larger than the discordance allows."""
    d, pd = abs(difference), p_discordant
    if d <= 0 or pd <= 0 or d * d >= pd:
        return None
    z_a, z_b = NormalDist().inv_cdf(1 - (1 - confidence) / 2), NormalDist().inv_cdf(power)
    return math.ceil((z_a * math.sqrt(pd) + z_b * math.sqrt(pd - d * d)) ** 2 / (d * d))


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 4)


def _paired(stat, boot: Resamples, with_ci: bool = True) -> dict:
    """A paired difference stat(W) (the vectorized metrics of `resampling`, W one row of weights per item set): its
    value on the items, and its interval: estimate +- t times its delete-a-prompt jackknife standard error
    (Resamples.jackknife_t_ci; the percentile bootstrap of a difference was too narrow with few prompts)."""
    n = boot.weights.shape[1]
    low, high = boot.jackknife_t_ci(stat) if with_ci else (M.NAN, M.NAN)
    return {"difference": _num(stat(np.ones((1, n)))[0]) if n else None, "ci95": [_num(low), _num(high)]}


def _kappa(g, p) -> float:
    return M.cohen_kappa(g, p, labels=["A", "B", "tie"])


def compare_arrays(gold, p_a, p_b, clusters=None, categories=None, tie_margin: float = 0.0) -> dict:
    """Judge A (P(A better) `p_a`) against judge B (`p_b`) on the same gold items: differences are B - A."""
    gold = np.asarray(gold, dtype=object).astype(str)
    p_a, p_b = np.asarray(p_a, dtype=float), np.asarray(p_b, dtype=float)
    pred_a, pred_b = M.verdicts_from_p(p_a, tie_margin), M.verdicts_from_p(p_b, tie_margin)
    arrays = (gold, pred_a, pred_b)
    # the audit's resampling unit (whole prompts when some prompt holds several items), for the jackknife alone:
    # no bootstrap resamples are drawn
    boot = Resamples.draw(len(gold), 0, 0, clusters)
    acc_w = lambda W: R.accuracy_no_ties(gold, pred_b, W) - R.accuracy_no_ties(gold, pred_a, W)  # noqa: E731
    kappa_w = lambda W: R.cohen_kappa(gold, pred_b, W) - R.cohen_kappa(gold, pred_a, W)  # noqa: E731
    non_tie = gold != "tie"
    right_a, right_b = (pred_a == gold) & non_tie, (pred_b == gold) & non_tie
    a_only, b_only = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    n_non_tie = int(non_tie.sum())
    out: dict[str, Any] = {
        "n_paired": int(len(gold)), "n_non_tie": n_non_tie,
        "resampling_unit": "item" if boot.clusters is None else "prompt",
        "accuracy_no_ties": {
            "a": _num(M.accuracy_no_ties(gold, pred_a)), "b": _num(M.accuracy_no_ties(gold, pred_b)), **_paired(acc_w, boot)},
        "cohen_kappa": {
            "a": _num(_kappa(gold, pred_a)), "b": _num(_kappa(gold, pred_b)), **_paired(kappa_w, boot)},
        "mcnemar": {"a_right_b_wrong": a_only, "b_right_a_wrong": b_only, "both_right": int((right_a & right_b).sum()),
                    "both_wrong": int((non_tie & ~right_a & ~right_b).sum()), "p_value": float(f"{mcnemar_exact(a_only, b_only):.3g}")},
    }
    if n_non_tie >= 2:
        y = (gold[non_tie] == "A").astype(float)
        pa, pb = p_a[non_tie], p_b[non_tie]
        sub = boot.subset(non_tie)
        for name, fn, fn_w in (("brier", M.brier, R.brier), ("log_loss", M.log_loss, R.log_loss)):
            diff_w = lambda W, fn_w=fn_w: fn_w(y, pb, W) - fn_w(y, pa, W)  # noqa: E731
            out[name] = {"a": _num(fn(y, pa)), "b": _num(fn(y, pb)), **_paired(diff_w, sub), "lower_is_better": True}
    if categories is not None:
        out["by_category"] = _by_category(np.asarray(categories, dtype=object), arrays, boot)
    out["verdict"], out["items_needed"] = _verdict(out)
    return out


def _by_category(categories, arrays, boot: Resamples) -> dict:
    gold, pred_a, pred_b = arrays
    out = {}
    for key in sorted({str(c) for c in categories}):
        m = np.array([str(c) == key for c in categories])
        part = boot.subset(m)
        diff_w = lambda W, g=gold[m], a=pred_a[m], b=pred_b[m]: R.accuracy_no_ties(g, b, W) - R.accuracy_no_ties(g, a, W)  # noqa: E731
        # fewer than MIN_UNITS prompts (or items) cannot estimate the spread: no interval
        out[key] = {"n": int(m.sum()), "units": part.units, **_paired(diff_w, part, with_ci=part.units >= MIN_UNITS)}
    return out


def _verdict(result: dict) -> tuple[str, int | None]:
    acc, mc = result["accuracy_no_ties"], result["mcnemar"]
    d, (low, high) = acc["difference"], acc["ci95"]
    n = result["n_non_tie"]
    p_disc = (mc["a_right_b_wrong"] + mc["b_right_a_wrong"]) / n if n else 0.0
    facts = (f"accuracy B - A = {d:+.3f} [{low:+.3f}, {high:+.3f}], exact McNemar p = {mc['p_value']:.3g} "
             f"(B right where A was wrong on {mc['b_right_a_wrong']} items, the reverse on {mc['a_right_b_wrong']})"
             if d is not None and low is not None else "accuracy could not be compared")
    if low is not None and (low > 0 or high < 0):
        better = "B" if low > 0 else "A"
        return f"{better} is better by {abs(d):.3f} in accuracy: {facts}.", None
    target = abs(d) if d else 0.05
    needed = paired_sample_size(p_disc, target) if p_disc else None
    tail = (f" Detecting a difference of {target:.3f} with 80% power at this discordance rate ({p_disc:.2f}) would need "
            f"about {needed} paired items (here {n})." if needed else "")
    return f"No detectable difference at this sample size: {facts}.{tail}", needed


# ---------------------------------------------------------------- two audit folders

def _arrays(pairs: list[tuple[dict, dict]]):
    gold = [a["label"] for a, _ in pairs]
    return (gold, [a["p_a"] for a, _ in pairs], [b["p_a"] for _, b in pairs], [a["cluster"] for a, _ in pairs],
            [a.get("category") or "(none)" for a, _ in pairs])


def compare_audits(path_a: str | Path, path_b: str | Path) -> dict:
    """Compare two audit folders on the gold items both judged."""
    meta_a, rows_a, folder_a = load_audit(path_a)
    meta_b, rows_b, folder_b = load_audit(path_b)
    for rows, folder in ((rows_a, folder_a), (rows_b, folder_b)):
        if not rows:
            raise InputError(f"{folder} has no {ITEMS}: it was written before per-item rows existed; rerun `rlaif audit` "
                             "into it (the judging is reused)")
    pairs = pair_rows(rows_a, rows_b)
    if not pairs:
        stems = [(f, s) for f, s in ((folder_a, file_named_ids(meta_a, rows_a)), (folder_b, file_named_ids(meta_b, rows_b))) if s]
        hint = "".join(f"; {folder}: {_file_named_text(stem)}" for folder, stem in stems)
        raise InputError(f"{folder_a} and {folder_b} share no judged gold item: compare audits of the same gold set{hint}")
    gold, pa, pb, clusters, cats = _arrays(pairs)
    tie_margin = float(meta_a.get("tie_margin") or 0.0)
    result = compare_arrays(gold, pa, pb, clusters, cats, tie_margin=tie_margin)
    fp = lambda m: (m.get("fingerprint") or {}).get("judge", {})  # noqa: E731
    result.update({
        "a": {"folder": str(folder_a), "judge": meta_a.get("judge"), "judge_fingerprint": fp(meta_a),
              "n_items": len(rows_a)},
        "b": {"folder": str(folder_b), "judge": meta_b.get("judge"), "judge_fingerprint": fp(meta_b),
              "n_items": len(rows_b)},
        "changed": what_changed(meta_a, meta_b), "gold": meta_a.get("gold"), "tie_margin": tie_margin,
        **unpaired_counts(rows_a, rows_b),
    })
    return result


# ---------------------------------------------------------------- the gate against a baseline

def _file_named_text(stem: str) -> str:
    return (f"gold ids carry its gold file's name ({stem}-...): that audit was written before the ids of a mapped gold "
            "file stopped depending on the file, so its items cannot pair with this one's; rerun its audit (into its "
            "folder: the judgments are reused) to pair them")


def _judge_changes(old: dict, new: dict) -> str:
    a, b = ((m.get("fingerprint") or {}).get("judge") or {} for m in (old, new))
    fields = [k for k in ("name", "config_sha", "template", "template_version", "constitution", "constitution_version",
                          "models") if a.get(k) != b.get(k)]
    shown = {"models": lambda m: ", ".join(f"{x.get('model')} {x.get('checksum') or ''}".strip() for x in m or [])}
    return "; ".join(f"{k}: {shown.get(k, str)(a.get(k))} -> {shown.get(k, str)(b.get(k))}" for k in fields)


def baseline_check(new_metrics: dict, new_rows: list[dict], baseline: str | Path, max_drop: float = 0.0) -> dict:
    """The change in agreement against an earlier audit; `passed` is False when agreement dropped by more than
    `max_drop` beyond the noise (the 95% interval of the change lies wholly below -max_drop).

    Paired (compare_arrays) on the items both audits judged; unpaired, when they share none, from the two
    audits' own intervals (half-widths combined in quadrature)."""
    old, old_rows, _ = load_audit(baseline)
    changed = what_changed(old, new_metrics)
    pairs = pair_rows(old_rows, new_rows)
    unpaired = len(pairs) < sum(r.get("p_a") is not None for r in new_rows)
    stem = file_named_ids(old, old_rows) if unpaired else None
    out: dict[str, Any] = {"baseline": str(baseline), "changed": changed, "max_drop": max_drop, "old_gold_ids": stem is not None}
    if pairs:
        gold, p_old, p_new, clusters, cats = _arrays(pairs)
        result = compare_arrays(gold, p_old, p_new, clusters, tie_margin=float(new_metrics.get("tie_margin") or 0.0))
        acc = result["accuracy_no_ties"]
        out.update({"paired": True, "n_paired": result["n_paired"], "old": acc["a"], "new": acc["b"],
                    "change": acc["difference"], "ci95": acc["ci95"], "mcnemar_p": result["mcnemar"]["p_value"],
                    "kappa_change": result["cohen_kappa"]["difference"], "kappa_change_ci95": result["cohen_kappa"]["ci95"]})
    else:
        a, b = ((m.get("agreement") or {}).get("accuracy_no_ties") or {} for m in (old, new_metrics))
        if a.get("value") is None or b.get("value") is None or None in a["ci95"] + b["ci95"]:
            raise InputError(f"{baseline}: no agreement figure with an interval to compare against")
        half = math.hypot((a["ci95"][1] - a["ci95"][0]) / 2, (b["ci95"][1] - b["ci95"][0]) / 2)
        change = b["value"] - a["value"]
        out.update({"paired": False, "n_paired": 0, "old": a["value"], "new": b["value"], "change": _num(change),
                    "ci95": [_num(change - half), _num(change + half)], "mcnemar_p": None})
    low, high = out["ci95"]
    out["passed"] = not (high is not None and high < -max_drop)
    what = ("nothing changed (same judge, same gold set)" if not changed else
            " and ".join(f"the {c} changed" for c in changed))
    if "judge" in changed:
        what += f" ({_judge_changes(old, new_metrics) or 'no fingerprint in the baseline'})"
    if "gold" in changed and pairs:
        what += f"; paired on the {len(pairs)} items both audits judged"
    if stem:
        what += f"; the baseline's {_file_named_text(stem)}"
    unit = f"paired on {out['n_paired']} items, McNemar p = {out['mcnemar_p']}" if out["paired"] else "unpaired"
    figure = f"accuracy {out['old']:.3f} -> {out['new']:.3f}, change {out['change']:+.3f} [{low:+.3f}, {high:+.3f}] ({unit})"
    if out["passed"]:
        out["detail"] = f"{figure}: within the noise{f' and the allowed drop of {max_drop}' if max_drop else ''}; {what}."
    else:
        out["detail"] = (f"{figure}: agreement dropped by more than the noise allows"
                         f"{f' plus the allowed {max_drop}' if max_drop else ''}; {what}.")
    out["verdict"] = "pass" if out["passed"] else "fail"
    return out


# ---------------------------------------------------------------- the compare report

def _fmt(entry: dict, key: str = "difference") -> str:
    v, (lo, hi) = entry.get(key), entry.get("ci95", [None, None])
    if v is None:
        return "n/a"
    return f"{v:+.3f}" if lo is None else f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _unpaired_text(result: dict) -> str:
    """"2 items were judged by only one (A alone: 1, B alone: 1)." and the items neither judged, when there are any."""
    n = result["unpaired_items"]
    split = f" (A alone: {result['judged_by_a_only']}, B alone: {result['judged_by_b_only']})" if n else ""
    neither = result.get("judged_by_neither") or 0
    return f"{n} items were judged by only one{split}" + (f"; {neither} by neither." if neither else ".")


def compare_markdown(result: dict, plots: list[str]) -> str:
    a, b = result["a"], result["b"]
    lines = [f"# Judge comparison: A = {a['judge']} vs B = {b['judge']}", "",
             f"A: {a['folder']}; B: {b['folder']}. Gold: {result.get('gold')}. "
             f"Paired on {result['n_paired']} items judged by both ({result['n_non_tie']} with a non-tie gold label); "
             f"{_unpaired_text(result)} What changed: "
             f"{', '.join(result['changed']) or 'neither the judge nor the gold set'}.", "",
             f"**Verdict.** {result['verdict']}", "",
             "Differences are B - A, with paired 95% intervals: the difference +- Student's t times its jackknife "
             f"standard error, leaving out one {'prompt' if result['resampling_unit'] == 'prompt' else 'item'} (or one "
             "group of them) at a time.", "",
             "| metric | A | B | B - A [95% CI] |", "|---|---|---|---|"]
    for key in ("accuracy_no_ties", "cohen_kappa", "brier", "log_loss"):
        if key in result:
            e = result[key]
            note = " (lower is better)" if e.get("lower_is_better") else ""
            lines.append(f"| {key}{note} | {e['a']} | {e['b']} | {_fmt(e)} |")
    mc = result["mcnemar"]
    lines += ["", "| both right | A right, B wrong | B right, A wrong | both wrong | exact McNemar p |", "|---|---|---|---|---|",
              f"| {mc['both_right']} | {mc['a_right_b_wrong']} | {mc['b_right_a_wrong']} | {mc['both_wrong']} | {mc['p_value']} |", ""]
    if result["resampling_unit"] == "prompt":
        lines += ["McNemar's test and the sample size treat items as independent; here gold items share prompts, so both "
                  "are optimistic, and the interval (whose unit is the whole prompt) is the figure to go by.", ""]
    if result.get("by_category"):
        lines += ["## By category (accuracy, B - A)", "", "| category | n | resampling units | B - A [95% CI] |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['units']} | {_fmt(v)} |" for k, v in result["by_category"].items()]
        lines += ["", f"No interval where a category has fewer than {MIN_UNITS} prompts (or items when no prompt repeats): so "
                  "few cannot estimate the spread.", ""]
    lines += plot_section(plots)
    return "\n".join(lines) + "\n"


def _category_plot(result: dict, out: Path) -> list[str]:
    rows = [(k, v) for k, v in (result.get("by_category") or {}).items() if v["difference"] is not None]
    if len(rows) < 2:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows.sort(key=lambda kv: kv[1]["difference"])
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.6))
    ys = np.arange(len(rows))
    diffs = np.array([v["difference"] for _, v in rows])
    has = np.array([v["ci95"][0] is not None for _, v in rows])
    lows = np.array([v["ci95"][0] if v["ci95"][0] is not None else v["difference"] for _, v in rows])
    highs = np.array([v["ci95"][1] if v["ci95"][1] is not None else v["difference"] for _, v in rows])
    ax.errorbar(diffs[has], ys[has], xerr=[(diffs - lows)[has], (highs - diffs)[has]], fmt="o", capsize=3,
                label="paired 95% interval (jackknife, t)")
    if (~has).any():
        ax.plot(diffs[~has], ys[~has], "o", color="grey", markerfacecolor="white",
                label=f"no interval: fewer than {MIN_UNITS} {'prompts' if result['resampling_unit'] == 'prompt' else 'items'}")
    overall = result["accuracy_no_ties"]
    ax.axvline(0, color="k", lw=1)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if overall["difference"] is not None:
        ax.axvline(overall["difference"], color="tab:red", ls="--", lw=1, label=f"all items: {overall['difference']:+.3f}")
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=1, frameon=False)
    unit = "prompts" if result["resampling_unit"] == "prompt" else "items"
    ax.set_yticks(ys, [f"{k} (n={v['n']}, {v['units']} {unit})" if unit == "prompts" else f"{k} (n={v['n']})"
                       for k, v in rows], fontsize=8)
    ax.set_xlabel("accuracy B - A")
    fig.suptitle("Where the two judges differ, by category", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "category_diff.png", dpi=110)
    plt.close(fig)
    return ["category_diff.png"]


def write_compare(out: Path, result: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = _category_plot(result, out)
    (out / "compare.json").write_text(json.dumps({**result, "plots": plots}, indent=2) + "\n")
    markdown = compare_markdown(result, plots)
    (out / "compare.md").write_text(markdown)
    (out / "compare.html").write_text(markdown_html(markdown, f"Judge comparison: {result['a']['judge']} vs {result['b']['judge']}"))
    return {name: out / name for name in ("compare.json", "compare.md", "compare.html", *plots)}
