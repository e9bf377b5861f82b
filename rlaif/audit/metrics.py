"""Audit metrics: agreement, inter-rater reliability, calibration, biases and uncertainty (numpy + math only).

Conventions: gold labels and judge verdicts are the strings "A", "B" and "tie"; `p_a` is the judge's
probability that response A is better. Calibration works on non-tie items with y = 1 if gold == "A" else 0.
Functions return nan (never raise) when a metric is undefined on the data given (e.g. no items), except
where the input itself is malformed (ValueError).

Tie policy: `accuracy_no_ties` scores the items whose gold label is A or B (a judge "tie" there is wrong);
`accuracy_with_ties` scores every item with full credit for an exact match and half credit when exactly one
side (gold or judge) says "tie".

The formulas are tested against scikit-learn / statsmodels (dev dependencies only) and published examples.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import combinations
from statistics import NormalDist

import numpy as np

__all__ = [
    "wilson_interval",
    "bootstrap_ci", "verdicts_from_p", "accuracy_no_ties", "accuracy_with_ties",
    "cohen_kappa", "fleiss_kappa", "krippendorff_alpha_nominal", "human_ceiling",
    "brier", "log_loss", "expected_calibration_error", "reliability_bins",
    "apply_temperature", "fit_temperature", "cross_validated_temperature", "coverage_curve",
    "position_consistency", "first_position_rate", "length_bias", "breakdown", "sample_size_for_width",
]

_EPS = 1e-12
_T_BOUNDS = (0.05, 20.0)
NAN = float("nan")


# ---------------------------------------------------------------- uncertainty

def bootstrap_ci(stat: Callable[..., float], *arrays, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Paired percentile bootstrap: resample items (the same indices for every array), drop nan resamples.

    Returns the (alpha/2, 1 - alpha/2) percentiles of `stat(*resampled)`, or (nan, nan) with < 2 valid resamples.
    """
    arrs = [np.asarray(a) for a in arrays]
    if not arrs or len(arrs[0]) == 0:
        return NAN, NAN
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError("bootstrap_ci: all arrays must have the same length")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        v = stat(*(a[idx] for a in arrs))
        v = NAN if v is None else float(v)
        if not math.isnan(v):
            values.append(v)
    if len(values) < 2:
        return NAN, NAN
    low, high = np.quantile(np.array(values), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def sample_size_for_width(width: float, p: float = 0.5, confidence: float = 0.95,
                          population: int | None = None) -> int:
    """Labels needed so the Wald interval of a rate near `p` has total width <= `width`.

    n = ceil(z^2 p (1-p) / (width/2)^2); with a finite `population` N: ceil(n / (1 + (n-1)/N)).
    """
    if not 0 < width <= 1 or not 0 < confidence < 1 or not 0 <= p <= 1:
        raise ValueError("need 0 < width <= 1, 0 < confidence < 1 and 0 <= p <= 1")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    n = max(1, math.ceil(z * z * p * (1 - p) / (width / 2) ** 2 - 1e-9))
    if population is not None:
        if population < 1:
            raise ValueError("population must be >= 1")
        n = min(population, math.ceil(n / (1 + (n - 1) / population) - 1e-9))
    return int(n)


# ---------------------------------------------------------------- agreement

def verdicts_from_p(p_a, tie_margin: float = 0.0) -> np.ndarray:
    """"A" if p_a > 0.5 + margin, "B" if p_a < 0.5 - margin, else "tie"."""
    p = np.asarray(p_a, dtype=float)
    return np.where(p > 0.5 + tie_margin, "A", np.where(p < 0.5 - tie_margin, "B", "tie"))


def _labels(x) -> np.ndarray:
    return np.asarray(x, dtype=object).astype(str)


def accuracy_no_ties(gold, pred) -> float:
    """Accuracy on items whose gold label is A or B (a judge "tie" there counts wrong); nan if none."""
    g, p = _labels(gold), _labels(pred)
    mask = g != "tie"
    return float(np.mean(g[mask] == p[mask])) if mask.any() else NAN


def accuracy_with_ties(gold, pred) -> float:
    """Accuracy on all items: exact match 1; gold tie vs judge A/B 0.5; gold A/B vs judge tie 0.5; A vs B 0."""
    g, p = _labels(gold), _labels(pred)
    if len(g) == 0:
        return NAN
    credit = np.where(g == p, 1.0, np.where((g == "tie") ^ (p == "tie"), 0.5, 0.0))
    return float(credit.mean())


def cohen_kappa(a, b, labels=None) -> float:
    """Unweighted Cohen's kappa (as sklearn: only pairs whose labels are both in `labels` are counted)."""
    x, y = _labels(a), _labels(b)
    cats = sorted(set(x) | set(y)) if labels is None else [str(c) for c in labels]
    index = {c: i for i, c in enumerate(cats)}
    keep = [(index[u], index[v]) for u, v in zip(x, y) if u in index and v in index]
    if not keep:
        return NAN
    cm = np.zeros((len(cats), len(cats)))
    np.add.at(cm, tuple(np.array(keep).T), 1.0)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = float(cm.sum(1) @ cm.sum(0)) / n ** 2
    return float((po - pe) / (1 - pe)) if pe < 1 else NAN


def _clean(item) -> list[str]:
    """One item's ratings without missing values (None / nan / "")."""
    return [str(r) for r in item if r is not None and r == r and str(r) != ""]


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float:
    """Fleiss' kappa; `ratings` holds one list of category labels per item, the same number of raters each."""
    items = [list(r) for r in ratings]
    if not items:
        return NAN
    m = len(items[0])
    if any(len(r) != m for r in items):
        raise ValueError("fleiss_kappa needs the same number of raters for every item")
    if m < 2:
        raise ValueError("fleiss_kappa needs at least 2 raters per item")
    cats = sorted({str(c) for r in items for c in r})
    table = np.array([[Counter(map(str, r))[c] for c in cats] for r in items], dtype=float)
    p_cat = table.sum(0) / (len(items) * m)
    p_item = ((table ** 2).sum(1) - m) / (m * (m - 1))
    pe = float((p_cat ** 2).sum())
    return float((p_item.mean() - pe) / (1 - pe)) if pe < 1 else NAN


def krippendorff_alpha_nominal(ratings: Sequence[Sequence[str]]) -> float:
    """Krippendorff's alpha (nominal) from the coincidence matrix; items with < 2 ratings are ignored.

    Missing ratings (None / nan) may be left in the per-item lists.
    """
    units = [c for c in (_clean(r) for r in ratings) if len(c) >= 2]
    if not units:
        return NAN
    n_c: Counter = Counter()  # row sums of the coincidence matrix: the pairable values of each category
    matched = 0.0  # its trace: sum over units of n_uc (n_uc - 1) / (m_u - 1)
    for u in units:
        counts = Counter(u)
        n_c.update(counts)
        matched += sum(k * (k - 1) for k in counts.values()) / (len(u) - 1)
    n = float(sum(n_c.values()))
    disagree_obs = n - matched
    disagree_exp = (n ** 2 - sum(v * v for v in n_c.values())) / (n - 1)
    return float(1 - disagree_obs / disagree_exp) if disagree_exp > 0 else NAN


def _majority(labels: Sequence[str]) -> str | None:
    """The unique most frequent label, or None if there is none (empty or a tied plurality)."""
    top = Counter(labels).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def _mean_pairwise_agreement(items: list[list[str]]) -> float:
    rates = [sum(u == v for u, v in combinations(r, 2)) / math.comb(len(r), 2) for r in items if len(r) >= 2]
    return sum(rates) / len(rates) if rates else NAN


def _loo_accuracy(items: list[list[str]]) -> float:
    """Each annotator (position j) against the majority of the others, on items where that majority is A/B."""
    per_annotator = []
    for j in range(max((len(r) for r in items), default=0)):
        hits = []
        for r in items:
            if j < len(r):
                maj = _majority(r[:j] + r[j + 1:])
                if maj is not None and maj != "tie":
                    hits.append(r[j] == maj)
        if hits:
            per_annotator.append(sum(hits) / len(hits))
    return sum(per_annotator) / len(per_annotator) if per_annotator else NAN


def human_ceiling(annotators: list[list[str]]) -> dict:
    """Human-human agreement: fleiss_kappa (nan when items have unequal rater counts), krippendorff_alpha,
    mean_pairwise_agreement, loo_accuracy_no_ties (the ceiling comparable to judge-vs-majority accuracy),
    n_items, n_annotators (the most ratings any item has). Annotator j is position j in each item's list."""
    items = [_clean(r) for r in annotators]
    sizes = {len(r) for r in items}
    fk = fleiss_kappa(items) if len(sizes) == 1 and min(sizes) >= 2 else NAN
    return {
        "fleiss_kappa": fk,
        "krippendorff_alpha": krippendorff_alpha_nominal(items),
        "mean_pairwise_agreement": _mean_pairwise_agreement(items),
        "loo_accuracy_no_ties": _loo_accuracy(items),
        "n_items": len(items),
        "n_annotators": max(sizes, default=0),
    }


def breakdown(groups, gold, pred) -> dict:
    """Per group: n, accuracy_no_ties and cohen_kappa."""
    g, y, p = np.asarray(groups, dtype=object), _labels(gold), _labels(pred)
    out = {}
    for key in dict.fromkeys(g.tolist()):
        mask = g == key
        out[key] = {"n": int(mask.sum()), "accuracy_no_ties": accuracy_no_ties(y[mask], p[mask]),
                    "cohen_kappa": cohen_kappa(y[mask], p[mask])}
    return out


# ---------------------------------------------------------------- calibration

def _yp(y, p) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(y, dtype=float), np.asarray(p, dtype=float)


def brier(y, p) -> float:
    """Mean squared error of P(A) against y in {0, 1}."""
    y, p = _yp(y, p)
    return float(np.mean((p - y) ** 2)) if len(y) else NAN


def log_loss(y, p, eps: float = _EPS) -> float:
    """Mean negative log-likelihood of y under P(A), with p clipped to [eps, 1 - eps]."""
    y, p = _yp(y, p)
    if not len(y):
        return NAN
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _top_label(y, p, n_bins: int):
    """Top-label confidence, correctness and bin index over equal-width bins of [0.5, 1]."""
    y, p = _yp(y, p)
    conf = np.maximum(p, 1 - p)
    correct = (p > 0.5) == (y == 1)
    bins = np.clip(np.floor((conf - 0.5) / (0.5 / n_bins)).astype(int), 0, n_bins - 1)
    return conf, correct, bins


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| on the top-label confidence max(p, 1 - p)."""
    conf, correct, bins = _top_label(y, p, n_bins)
    if not len(conf):
        return NAN
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() / len(conf) * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def reliability_bins(y, p, n_bins: int = 10) -> list[dict]:
    """The ECE bins: lo, hi, count, mean_confidence and accuracy (None for empty bins)."""
    conf, correct, bins = _top_label(y, p, n_bins)
    rows = []
    for b in range(n_bins):
        m = bins == b
        rows.append({"lo": 0.5 + b * 0.5 / n_bins, "hi": 0.5 + (b + 1) * 0.5 / n_bins, "count": int(m.sum()),
                     "mean_confidence": float(conf[m].mean()) if m.any() else None,
                     "accuracy": float(correct[m].mean()) if m.any() else None})
    return rows


def apply_temperature(p, T: float) -> np.ndarray:
    """sigmoid(logit(clip(p)) / T)."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / T))


def fit_temperature(y, p, tol: float = 1e-7) -> float:
    """The T in [0.05, 20] minimising log-loss: golden-section search on log T (deterministic)."""
    y, p = _yp(y, p)
    if not len(y):
        return NAN
    f = lambda u: log_loss(y, apply_temperature(p, math.exp(u)))  # noqa: E731
    a, b = math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


def _scores(y, p) -> dict:
    return {"ece": expected_calibration_error(y, p), "brier": brier(y, p), "log_loss": log_loss(y, p)}


def cross_validated_temperature(y, p, k: int = 5, seed: int = 0) -> dict:
    """k-fold temperature scaling: each item is calibrated with the T fitted on the other folds.

    Uses k = max(2, n // 2) folds when n < 2k; with n < 4 nothing is fitted (temperatures [], after = before).
    """
    y, p = _yp(y, p)
    n, before = len(y), _scores(y, p)
    if n < 4:
        return {"temperatures": [], "p_calibrated": p.copy(), "before": before, "after": dict(before)}
    k = k if n >= 2 * k else max(2, n // 2)
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    out, temps = np.empty(n), []
    for fold in folds:
        train = np.ones(n, dtype=bool)
        train[fold] = False
        t = fit_temperature(y[train], p[train])
        temps.append(t)
        out[fold] = apply_temperature(p[fold], t)
    return {"temperatures": temps, "p_calibrated": out, "before": before, "after": _scores(y, out)}


def coverage_curve(correct, confidence, thresholds=None) -> list[dict]:
    """For each threshold t keep items with confidence >= t: threshold, coverage, accuracy (nan if none), n."""
    ok, conf = np.asarray(correct, dtype=bool), np.asarray(confidence, dtype=float)
    if thresholds is None:
        thresholds = np.round(np.arange(0.5, 0.951, 0.05), 2)
    rows = []
    for t in thresholds:
        m = conf >= t
        rows.append({"threshold": float(t), "coverage": float(m.mean()) if len(conf) else NAN,
                     "accuracy": float(ok[m].mean()) if m.any() else NAN, "n": int(m.sum())})
    return rows


# ---------------------------------------------------------------- biases

def position_consistency(p_a_order1, p_a_order2_flipped) -> float:
    """Fraction of items whose two P(A better) readings (one per presentation order) lie on the same side
    of 0.5 (both exactly 0.5 counts as consistent); nan if no items."""
    a, b = _yp(p_a_order1, p_a_order2_flipped)
    return float(np.mean(np.sign(a - 0.5) == np.sign(b - 0.5))) if len(a) else NAN


def first_position_rate(p_first_shown_list) -> float:
    """Fraction of decisive per-order verdicts (p != 0.5) that picked the response shown first; 0.5 = no bias."""
    p = np.asarray(p_first_shown_list, dtype=float)
    p = p[p != 0.5]
    return float(np.mean(p > 0.5)) if len(p) else NAN


def length_bias(gold, pred, len_a, len_b) -> dict:
    """On items with len_a != len_b: how often the judge's A/B verdicts and the non-tie gold labels pick the
    longer response (nan when there are none), and n (items with unequal lengths)."""
    g, p = _labels(gold), _labels(pred)
    la, lb = np.asarray(len_a), np.asarray(len_b)
    mask = la != lb
    longer = np.where(la > lb, "A", "B")

    def rate(labels):
        m = mask & (labels != "tie")
        return float(np.mean(labels[m] == longer[m])) if m.any() else NAN

    return {"judge_prefers_longer": rate(p), "human_prefers_longer": rate(g), "n": int(mask.sum())}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) when n == 0. Sound for small n and rates near 0 or 1."""
    if n <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
