"""AuditRecords -> every audit metric, each with its 95% interval where one makes sense.

Tie policy (stated in every report): the judge says "tie" only when |p_a - 0.5| <= tie_margin (default
0: it never ties). `accuracy_no_ties` is measured on items whose gold label is A or B; `accuracy_with_ties`
counts all items, with half credit when exactly one side says tie. Kappa is Cohen's kappa over A/B/tie
on all judged items. Calibration is measured on the non-tie items, against P(A better); in its coverage table a
judge tie is an abstention: never kept at any threshold, counted apart (`coverage_judge_ties`).

Intervals: every bootstrap interval of one audit is read from the same resamples (`resampling.Resamples`): whole
prompts when some prompt holds several gold items (the PandaLM test set: 999 items over 170 prompts), else items;
`bootstrap_unit` says which. Percentile intervals, expanded for few resampled units (Student's t), bias-corrected
and accelerated (metrics.percentile_interval), except ECE (the plug-in ECE is biased upwards: a lower and an upper
bound that each hold whatever the truth, so the interval is conservative, resampling.ece_interval), log-loss
(the jackknife-t interval of its log, taken back: the loss is right-skewed, Resamples.log_jackknife_t_ci) and the
per-category / per-principle accuracies and the coverage-table rows (agreement on the items kept above a confidence
threshold): Wilson on the effective sample size of the prompt clusters, with Student's t; none below 5 prompts.
`benchmarks/audit_selfcheck.py` measures how often each interval covers the truth on synthetic audits.

Bias flags (`biases.flags`), each at the audit's own 95% level:
- position bias: the 95% interval of first_position_rate (the share of decisive single-order readings that pick
  the response shown first; 0.5 = none) excludes 0.5. An item's two readings are resampled together.
- length bias: the 95% interval of judge_prefers_longer - human_prefers_longer, on the same items (paired), excludes
  0: the judge picks the longer response more (or less) often than the humans do on these items. A judge that
  follows the humans' own taste for length is not flagged; one that reads quality better or worse than a single
  human can differ a little from them where quality and length go together.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from rlaif.audit import information as I
from rlaif.audit import metrics as M
from rlaif.audit import resampling as R
from rlaif.audit.judging import AuditRecord
from rlaif.records import reason_kind

__all__ = ["compute_audit", "TIE_POLICY"]

TIE_POLICY = ("judge says tie only when |P(A) - 0.5| <= tie_margin; accuracy_no_ties uses gold A/B items "
              "(a judge tie there is wrong); accuracy_with_ties uses all items with half credit when exactly "
              "one side says tie; Cohen's kappa over A/B/tie on all judged items; the coverage table counts a judge tie as an "
              "abstention (never kept)")


def _entry(value, interval) -> dict:
    low, high = interval
    return {"value": _num(value), "ci95": [_num(low), _num(high)]}


def _excludes(interval, value: float) -> bool:
    low, high = interval
    return bool(low > value or high < value)  # False when the interval is nan


def _num(x):
    x = float(x)
    return None if np.isnan(x) else round(x, 4)


def _agreement(gold, pred, boot: R.Resamples) -> dict:
    non_tie = gold != "tie"
    return {
        "n": int(len(gold)), "n_non_tie": int(non_tie.sum()),
        "accuracy_no_ties": _entry(M.accuracy_no_ties(gold, pred), boot.stat_ci(lambda W: R.accuracy_no_ties(gold, pred, W))),
        "accuracy_with_ties": _entry(M.accuracy_with_ties(gold, pred), boot.stat_ci(lambda W: R.accuracy_with_ties(gold, pred, W))),
        "cohen_kappa": _entry(M.cohen_kappa(gold, pred, labels=["A", "B", "tie"]), boot.stat_ci(lambda W: R.cohen_kappa(gold, pred, W))),
    }


def _calibration(gold, p_a, boot: R.Resamples, seed: int, pred=None) -> dict:
    """Calibration of P(A) on the gold A/B items, and the coverage table of the judge's verdicts `pred` (default: read
    from P(A) without a tie margin)."""
    pred = M.verdicts_from_p(p_a) if pred is None else pred
    mask = gold != "tie"
    y, p = (gold[mask] == "A").astype(float), p_a[mask]
    if len(y) < 2:
        return {"n": int(len(y))}
    cv = M.cross_validated_temperature(y, p, k=5, seed=seed)
    sub = boot.subset(mask)
    return {
        "n": int(len(y)),
        "ece": _entry(M.expected_calibration_error(y, p), R.ece_interval(y, p, sub)),
        "ece_interval_method": ("the plug-in ECE is biased upwards: two bounds that each fail at most ~2.5% of the time, so the "
                                "interval is conservative (lower: ECE minus the noise's ECE, upper: ECE plus a linear bound "
                                "on the noise; rlaif/audit/resampling.py ece_interval)"),
        "brier": _entry(M.brier(y, p), sub.stat_ci(lambda W: R.brier(y, p, W))),
        "log_loss": _entry(M.log_loss(y, p), sub.log_jackknife_t_ci(lambda W: R.log_loss(y, p, W))),
        "log_loss_method": (f"P(A) clipped to [{M.LOG_LOSS_FLOOR}, {1 - M.LOG_LOSS_FLOOR}]; interval: estimate * exp(-+ t x the "
                            "delete-a-prompt (or -item) jackknife SE of its log) (rlaif/audit/resampling.py log_jackknife_t_ci)"),
        **_information(y, p, sub),
        "reliability": M.flag_sparse_bins(M.reliability_bins(y, p, n_bins=10), len(y)),
        "reliability_after_temperature": M.flag_sparse_bins(M.reliability_bins(y, np.asarray(cv["p_calibrated"]), n_bins=10), len(y)),
        "reliability_sparse_below": M.sparse_bin_min_count(len(y)),
        "temperature_scaling": {
            "method": "5-fold cross-validation: each item calibrated with the temperature fitted on the other folds",
            "fold_temperatures": [round(t, 4) for t in cv["temperatures"]],
            "temperature_all_items": round(M.fit_temperature(y, p), 4),
            "temperature_search_bounds": [0.05, 20.0],
            "before": {k: _num(v) for k, v in cv["before"].items()},
            "after_out_of_fold": {k: _num(v) for k, v in cv["after"].items()},
        },
        **_coverage(pred[mask] == gold[mask], np.maximum(p, 1 - p), pred[mask] == "tie", sub.clusters),
    }


def _information(y, p, sub: R.Resamples) -> dict:
    """The judge's ECE, Brier and log-loss beside the constant base-rate predictor's, the AUC of P(A), and whether
    P(A) carries information (rlaif.audit.information)."""
    info = I.information(y, p, sub)
    base = {k: _num(v) for k, v in I.base_rate_scores(y).items()}
    return {"vs_base_rate": {**base, "judge_brier_minus_base_rate": _entry(*info["judge_brier_minus_base_rate"])},
            "auc": _entry(*info["auc"]),
            "information": {k: info[k] for k in ("carries_information", "rule", "verdict")}}


def _coverage(correct, confidence, abstain, clusters) -> dict:
    """The coverage table: a judge tie is an abstention (never kept, counted apart); each row's interval is the
    Wilson interval on the effective sample size of the prompt clusters, as for the per-category accuracies."""
    ones = np.ones(len(correct))
    interval = lambda kept: R.clustered_wilson(correct[kept], ones[kept], None if clusters is None else clusters[kept])  # noqa: E731
    table = M.coverage_table(correct, confidence, abstain, interval)
    rows = [{k: (v if k in ("n", "keep_share") else [_num(x) for x in v] if k == "accuracy_ci95" else _num(v)) for k, v in row.items()}
            for row in table["rows"]]
    rule = ("fixed thresholds 0.50, 0.55, ..., 0.95" if table["rule"] == "fixed" else
            "thresholds at the judge's own confidence quantiles keeping 100%, 90%, ..., 10% of the items (the fixed "
            "thresholds 0.50 ... 0.95 would leave more than half of the rows with under 10% of the items)")
    return {"coverage_curve": rows, "coverage_rule": table["rule"], "coverage_rule_text": rule,
            "coverage_judge_ties": table["n_abstained"], "coverage_interval": COVERAGE_INTERVAL}


COVERAGE_INTERVAL = ("Wilson on the effective sample size of the prompt clusters, with Student's t (none below "
                     f"{R.MIN_UNITS} prompts), as the per-category accuracies; plain Wilson when no prompt repeats")


BASELINES = {"always_longer": "always the longer", "always_shorter": "always the shorter",
             "always_first_shown": "always the first shown (A)"}
BASELINE_DEFINITIONS = {
    "lengths": "character counts of response_a and response_b",
    "always_longer": "picks the longer response; says tie when both have the same length",
    "always_shorter": "picks the shorter response; says tie when both have the same length",
    "always_first_shown": "picks response A, the gold item's response_a (listed and shown first)",
    "length_controlled": (
        "on gold A/B items, with h = +1 (gold A) or -1 (gold B), s = sign(len_a - len_b) and d = tanh((len_a - len_b) / sd), "
        "a ridge-penalised (1.0) logistic regression logit P(judge verdict == gold) = a + g*h + b_s*h*s + b_d*h*d, i.e. "
        "logit P(judge says A) = g + a*h + b_s*s + b_d*d, fitted with weights that give the items where humans preferred the "
        "longer response and those where they preferred the shorter one equal total weight; the agreement predicted with "
        "the length terms set to zero, mean of sigmoid(a + g*h) (same weights). A judge tie counts as a disagreement. "
        "b_s, b_d > 0: the judge leans to the longer response beyond what the human label explains. Refitted on every "
        "bootstrap resample"),
}


def _baselines(records: list[AuditRecord], gold, pred, boot: R.Resamples | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Trivial rules scored exactly like the judge on the same items, the length-controlled judge, and whether the
    judge beats the better of the two length rules (paired bootstrap of the accuracy_no_ties difference). `boot`:
    the audit's resamples (without it, n_boot resamples are drawn as the audit would)."""
    if boot is None:
        boot = R.Resamples.draw(len(records), n_boot, seed, [r.item.prompt for r in records])
    len_a = np.array([len(r.item.response_a) for r in records])
    len_b = np.array([len(r.item.response_b) for r in records])
    verdicts = {"always_longer": M.length_rule_verdicts(len_a, len_b, "longer"),
                "always_shorter": M.length_rule_verdicts(len_a, len_b, "shorter"),
                "always_first_shown": M.first_shown_verdicts(len(gold))}
    rules = {key: {"label": BASELINES[key], **_agreement(gold, v, boot), "verdicts": dict(Counter(v.tolist()))}
             for key, v in verdicts.items()}
    fit = M.length_control_fit(gold, pred, len_a, len_b)
    arrays = M.length_control_arrays(gold, pred, len_a, len_b)
    controlled = {"accuracy_no_ties": _entry(fit["agreement"], boot.stat_ci(lambda W: R.length_controlled_agreement(*arrays, W))),
                  "coefficients": {k: _num(v) for k, v in (fit["coefficients"] or {}).items()} or None,
                  **{k: (_num(v) if isinstance(v, float) else v) for k, v in fit.items() if k not in ("agreement", "coefficients")}}
    out = {"definitions": BASELINE_DEFINITIONS, "rules": rules, "length_controlled": controlled, "judge_vs_best_length_rule": None}
    scores = {k: rules[k]["accuracy_no_ties"]["value"] for k in ("always_longer", "always_shorter")}
    judge = M.accuracy_no_ties(gold, pred)
    if np.isnan(judge) or None in scores.values():
        return out
    best = max(scores, key=lambda k: scores[k])
    # accuracy_no_ties(gold, pred) - accuracy_no_ties(gold, rule), on numbers: (judge right - rule right) over gold A/B items
    counted, right = gold != "tie", (pred == gold).astype(float) - (verdicts[best] == gold)
    diff = _entry(float(right[counted].mean()) if counted.any() else np.nan, boot.stat_ci(lambda W: R.ratio(W, right * counted, counted)))
    lo, hi = diff["ci95"]
    beats = lo is not None and lo > 0
    rule = f"{BASELINES[best]}: {_ci_text(rules[best]['accuracy_no_ties'])}"
    why = ("" if beats else ": it does worse" if hi is not None and hi < 0 else ": the two cannot be told apart")
    verdict = (f"The judge {'beats' if beats else 'does NOT beat'} the best length rule ({rule}) on this set{why} "
               f"(judge {judge:.3f}; judge minus rule {_ci_text(diff, signed=True)}).")
    out["judge_vs_best_length_rule"] = {"rule": best, "judge_minus_rule": diff, "judge_beats_rule": beats, "verdict": verdict}
    return out


def _ci_text(entry: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    lo, hi = entry["ci95"]
    value = f.format(entry["value"])
    return value if lo is None else f"{value} [{f.format(lo)}, {f.format(hi)}]"


POSITION_RULE = ("flagged when the 95% interval of first_position_rate excludes 0.5 (an item's two readings are "
                 "resampled together)")
LENGTH_RULE = ("flagged when the 95% interval of judge_prefers_longer - human_prefers_longer (the same items, paired) "
               "excludes 0")


def _biases(records: list[AuditRecord], gold, pred, boot: R.Resamples) -> dict:
    orders = [r.p_a_by_order() for r in records]
    both = [(a, b) for a, b in orders if a is not None and b is not None]
    shown = [np.asarray(r.p_first_shown(), dtype=float) for r in records]
    first_shown = [x for s in shown for x in s.tolist()]
    len_a = np.array([len(r.item.response_a) for r in records])
    len_b = np.array([len(r.item.response_b) for r in records])
    length = M.length_bias(gold, pred, len_a, len_b)
    rate = M.first_position_rate(np.array(first_shown)) if first_shown else M.NAN
    firsts = np.array([float(np.sum(s > 0.5)) for s in shown])
    decisive = np.array([float(np.sum(s != 0.5)) for s in shown])
    rate_ci = boot.stat_ci(lambda W: R.first_position_rate(firsts, decisive, W))
    gap_ci = boot.stat_ci(lambda W: R.length_preference_gap(gold, pred, len_a, len_b, W))
    out = {
        "position_consistency": (_num(M.position_consistency(np.array([a for a, _ in both]), np.array([b for _, b in both])))
                                 if both else None),
        "n_both_orders": len(both),
        "first_position_rate": _num(rate) if first_shown else None,
        "length": length,
        "flags": {
            "position_bias": {"flagged": _excludes(rate_ci, 0.5) if first_shown else None,  # None: not measured
                              "statistic": "first_position_rate",
                              **_entry(rate, rate_ci), "rule": POSITION_RULE},
            "length_bias": {"flagged": _excludes(gap_ci, 0.0), "statistic": "judge_prefers_longer - human_prefers_longer",
                            **_entry(length["judge_prefers_longer"] - length["human_prefers_longer"], gap_ci),
                            "rule": LENGTH_RULE},
        },
    }
    return out


def _breakdown(keys: list[str], gold, pred, clusters) -> dict:
    """Per group: n (every item, gold ties included), n_non_tie (the gold A/B items accuracy_no_ties is taken over),
    accuracy_no_ties with its Wilson interval (on the effective sample size when prompts repeat) and cohen_kappa."""
    keys = np.array(keys, dtype=object)
    table = M.breakdown(keys, gold, pred)
    out = {}
    for key, row in sorted(table.items()):
        mask = (keys == key) & (gold != "tie")
        entry = {m: (_num(v) if m != "n" else v) for m, v in row.items()}
        entry = {"n": entry.pop("n"), "n_non_tie": int(mask.sum()), **entry}
        interval = R.clustered_wilson(gold[mask] == pred[mask], np.ones(int(mask.sum())), None if clusters is None else clusters[mask])
        entry["accuracy_no_ties_ci95"] = [_num(x) for x in interval]
        out[str(key)] = entry
    return out


def _humans(records: list[AuditRecord], pred, boot: R.Resamples) -> dict | None:
    """Human-human agreement on the same items, and the judge placed among the humans."""
    rated = [i for i, r in enumerate(records) if len(r.item.annotators) >= 2]
    if not rated:
        return None
    annotators: list[list[str]] = [list(records[i].item.annotators) for i in rated]
    ceiling = M.human_ceiling(annotators)
    with_judge = [a + [str(pred[i])] for a, i in zip(annotators, rated)]
    ceiling["krippendorff_alpha_with_judge_as_extra_rater"] = M.krippendorff_alpha_nominal(with_judge)
    hits, counted = M.loo_hits(annotators)
    sub = boot.subset(np.array(rated))
    low, high = sub.stat_ci(lambda W: R.loo_accuracy(hits, counted, W))
    ceiling["loo_accuracy_no_ties_ci95"] = [_num(low), _num(high)]
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in ceiling.items()}


def compute_audit(records: list[AuditRecord], tie_margin: float = 0.0, n_boot: int = 2000, seed: int = 0) -> dict:
    judged = [r for r in records if r.labeled]
    unlabeled = [r for r in records if not r.labeled]
    reasons = Counter(reason_kind(r.judgment.reason) if r.judgment else "not judged / not found in the label run" for r in unlabeled)
    result = {"tie_policy": TIE_POLICY, "tie_margin": tie_margin, "bootstrap_resamples": n_boot,
              "n_gold": len(records), "n_judged": len(judged), "n_unlabeled": len(unlabeled),
              "unlabeled_reasons": dict(reasons)}
    if not judged:
        return result
    gold = np.array([r.item.label for r in judged])
    p_a = np.array([r.p_a for r in judged])
    pred = M.verdicts_from_p(p_a, tie_margin)
    boot = R.Resamples.draw(len(judged), n_boot, seed, [r.item.prompt for r in judged])
    clusters = boot.clusters
    result["bootstrap_unit"] = boot.unit
    result["agreement"] = _agreement(gold, pred, boot)
    result["judge_verdicts"] = dict(Counter(pred.tolist()))
    result["gold_labels"] = dict(Counter(gold.tolist()))
    result["calibration"] = _calibration(gold, p_a, boot, seed, pred)
    result["biases"] = _biases(judged, gold, pred, boot)
    result["baselines"] = _baselines(judged, gold, pred, boot)
    result["by_category"] = _breakdown([r.item.category or "(none)" for r in judged], gold, pred, clusters)
    result["by_principle"] = _breakdown(["+".join(r.judgment.principle_ids) for r in judged if r.judgment], gold, pred, clusters)
    result["humans"] = _humans(judged, pred, boot)
    return result
