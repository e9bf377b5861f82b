"""AuditRecords -> every audit metric, each with its bootstrap 95% interval where one makes sense.

Tie policy (stated in every report): the judge says "tie" only when |p_a - 0.5| <= tie_margin (default
0: it never ties). `accuracy_no_ties` is measured on items whose gold label is A or B; `accuracy_with_ties`
counts all items, with half credit when exactly one side says tie. Kappa is Cohen's kappa over A/B/tie
on all judged items. Calibration is measured on the non-tie items, against P(A better).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from rlaif.audit import metrics as M
from rlaif.audit.judging import AuditRecord
from rlaif.records import reason_kind

__all__ = ["compute_audit", "TIE_POLICY"]

TIE_POLICY = ("judge says tie only when |P(A) - 0.5| <= tie_margin; accuracy_no_ties uses gold A/B items "
              "(a judge tie there is wrong); accuracy_with_ties uses all items with half credit when exactly "
              "one side says tie; Cohen's kappa over A/B/tie on all judged items")


def _with_ci(stat, *arrays, n_boot: int, seed: int) -> dict:
    value = stat(*arrays)
    low, high = M.bootstrap_ci(stat, *arrays, n_boot=n_boot, seed=seed)
    return {"value": _num(value), "ci95": [_num(low), _num(high)]}


def _num(x):
    x = float(x)
    return None if np.isnan(x) else round(x, 4)


def _agreement(gold, pred, n_boot, seed) -> dict:
    non_tie = gold != "tie"
    return {
        "n": int(len(gold)), "n_non_tie": int(non_tie.sum()),
        "accuracy_no_ties": _with_ci(M.accuracy_no_ties, gold, pred, n_boot=n_boot, seed=seed),
        "accuracy_with_ties": _with_ci(M.accuracy_with_ties, gold, pred, n_boot=n_boot, seed=seed),
        "cohen_kappa": _with_ci(lambda g, p: M.cohen_kappa(g, p, labels=["A", "B", "tie"]), gold, pred, n_boot=n_boot, seed=seed),
    }


def _calibration(gold, p_a, n_boot, seed) -> dict:
    mask = gold != "tie"
    y, p = (gold[mask] == "A").astype(float), p_a[mask]
    if len(y) < 2:
        return {"n": int(len(y))}
    cv = M.cross_validated_temperature(y, p, k=5, seed=seed)
    return {
        "n": int(len(y)),
        "ece": _with_ci(M.expected_calibration_error, y, p, n_boot=n_boot, seed=seed),
        "brier": _with_ci(M.brier, y, p, n_boot=n_boot, seed=seed),
        "log_loss": _with_ci(M.log_loss, y, p, n_boot=n_boot, seed=seed),
        "reliability": M.reliability_bins(y, p, n_bins=10),
        "reliability_after_temperature": M.reliability_bins(y, np.asarray(cv["p_calibrated"]), n_bins=10),
        "temperature_scaling": {
            "method": "5-fold cross-validation: each item calibrated with the temperature fitted on the other folds",
            "fold_temperatures": [round(t, 4) for t in cv["temperatures"]],
            "temperature_all_items": round(M.fit_temperature(y, p), 4),
            "temperature_search_bounds": [0.05, 20.0],
            "before": {k: _num(v) for k, v in cv["before"].items()},
            "after_out_of_fold": {k: _num(v) for k, v in cv["after"].items()},
        },
        "coverage_curve": [{k: _num(v) if k != "n" else v for k, v in row.items()}
                           for row in M.coverage_curve((p > 0.5) == (y == 1), np.maximum(p, 1 - p))],
    }


def _biases(records: list[AuditRecord], gold, pred) -> dict:
    orders = [r.p_a_by_order() for r in records]
    both = [(a, b) for a, b in orders if a is not None and b is not None]
    first_shown = [x for r in records for x in r.p_first_shown()]
    len_a = np.array([len(r.item.response_a) for r in records])
    len_b = np.array([len(r.item.response_b) for r in records])
    out = {
        "position_consistency": (_num(M.position_consistency(np.array([a for a, _ in both]), np.array([b for _, b in both])))
                                 if both else None),
        "n_both_orders": len(both),
        "first_position_rate": _num(M.first_position_rate(np.array(first_shown))) if first_shown else None,
        "length": M.length_bias(gold, pred, len_a, len_b),
    }
    return out


def _breakdown(keys: list[str], gold, pred) -> dict:
    keys = np.array(keys, dtype=object)
    table = M.breakdown(keys, gold, pred)
    out = {}
    for key, row in sorted(table.items()):
        mask = (keys == key) & (gold != "tie")
        entry = {m: (_num(v) if m != "n" else v) for m, v in row.items()}
        entry["accuracy_no_ties_ci95"] = [_num(x) for x in M.wilson_interval(int((gold[mask] == pred[mask]).sum()), int(mask.sum()))]
        out[str(key)] = entry
    return out


def _humans(records: list[AuditRecord], pred, n_boot: int, seed: int) -> dict | None:
    """Human-human agreement on the same items, and the judge placed among the humans."""
    rated = [i for i, r in enumerate(records) if len(r.item.annotators) >= 2]
    if not rated:
        return None
    annotators: list[list[str]] = [list(records[i].item.annotators) for i in rated]
    ceiling = M.human_ceiling(annotators)
    with_judge = [a + [str(pred[i])] for a, i in zip(annotators, rated)]
    ceiling["krippendorff_alpha_with_judge_as_extra_rater"] = M.krippendorff_alpha_nominal(with_judge)
    boot = lambda idx: M.human_ceiling([annotators[int(j)] for j in idx])["loo_accuracy_no_ties"]  # noqa: E731
    low, high = M.bootstrap_ci(boot, np.arange(len(annotators)), n_boot=min(n_boot, 500), seed=seed)
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
    result["agreement"] = _agreement(gold, pred, n_boot, seed)
    result["judge_verdicts"] = dict(Counter(pred.tolist()))
    result["gold_labels"] = dict(Counter(gold.tolist()))
    result["calibration"] = _calibration(gold, p_a, n_boot, seed)
    result["biases"] = _biases(judged, gold, pred)
    result["by_category"] = _breakdown([r.item.category or "(none)" for r in judged], gold, pred)
    result["by_principle"] = _breakdown(["+".join(r.judgment.principle_ids) for r in judged if r.judgment], gold, pred)
    result["humans"] = _humans(judged, pred, n_boot, seed)
    return result
