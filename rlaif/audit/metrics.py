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
    "bootstrap_ci", "resample_weights", "percentile_interval", "expanded_z", "t_quantile",
    "verdicts_from_p", "accuracy_no_ties", "accuracy_with_ties",
    "cohen_kappa", "fleiss_kappa", "krippendorff_alpha_nominal", "human_ceiling",
    "brier", "log_loss", "LOG_LOSS_FLOOR", "expected_calibration_error", "reliability_bins",
    "apply_temperature", "fit_temperature", "cross_validated_temperature", "coverage_curve",
    "position_consistency", "first_position_rate", "length_bias", "breakdown", "sample_size_for_width", "loo_hits",
]

_EPS = 1e-12
LOG_LOSS_FLOOR = 0.01
"""The reported log-loss reads P(A) clipped to [0.01, 0.99], so one verdict costs at most log(100) = 4.6 nats.
Unclipped, one confidently wrong verdict can cost 28 nats (p = 1e-12) and a few such items carry the mean: no
interval the self-check tried held 93% when gold items share prompts (0.88-0.93). Temperature scaling still fits
the unclipped likelihood."""
_T_BOUNDS = (0.05, 20.0)
NAN = float("nan")


# ---------------------------------------------------------------- uncertainty

def resample_weights(n: int, n_boot: int = 2000, seed: int = 0, clusters=None) -> np.ndarray:
    """The bootstrap resamples as an (n_boot, n) matrix of counts: how often each item enters each resample.

    Without `clusters`, n items are drawn with replacement. With `clusters` (one key per item, e.g. its prompt),
    the C distinct keys are drawn with replacement, C of them, and every item of a drawn cluster comes along
    (the cluster bootstrap: items that share a prompt are not independent, so the prompt is the unit). A
    statistic that is a ratio of sums is then computed on every resample at once: (W @ num) / (W @ den).
    """
    rng = np.random.default_rng(seed)
    if clusters is None:
        codes, units = np.arange(n), n
    else:
        keys = np.asarray(clusters)
        if len(keys) != n:
            raise ValueError("resample_weights: one cluster key per item")
        _, codes = np.unique(keys, return_inverse=True)
        units = int(codes.max()) + 1 if n else 0
    counts = np.zeros((n_boot, units))
    rows = max(1, 2 ** 22 // max(units, 1))  # draw in blocks of at most ~4M indices
    for start in range(0, n_boot, rows):
        b = min(rows, n_boot - start)
        draws = rng.integers(0, units, size=(b, units)) + units * np.arange(b)[:, None]
        counts[start:start + b] = np.bincount(draws.ravel(), minlength=b * units).reshape(b, units)
    return counts if clusters is None else counts[:, codes.ravel()]


def t_quantile(p: float, df: float) -> float:
    """Student t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion around the normal
    quantile (Hill 1970; error < 0.01 at 3 df for p = 0.975, far less above)."""
    if df <= 0:
        return NAN
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z, v = NormalDist().inv_cdf(p), float(df)
    return (z + (z ** 3 + z) / (4 * v) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * v ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * v ** 3)
            + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / (92160 * v ** 4))


def expanded_z(units: int | None, alpha: float = 0.05) -> float:
    """The normal quantile an expanded percentile interval uses (Hesterberg 2015): sqrt(C / (C - 1)) * t(C - 1), with
    C the resampled units (items, or prompts): the bootstrap's variance is (C - 1) / C of the usual estimate, and with
    few units the interval needs t's tails. Plain z(1 - alpha/2) when `units` is None; nan with fewer than 2 units."""
    if units is None:
        return NormalDist().inv_cdf(1 - alpha / 2)
    if units < 2:
        return NAN
    return math.sqrt(units / (units - 1)) * t_quantile(1 - alpha / 2, units - 1)


def percentile_interval(values, alpha: float = 0.05, point: float | None = None, units: int | None = None,
                        jackknife=None) -> tuple[float, float]:
    """A bootstrap interval from the finite resampled values; (nan, nan) with fewer than 2.

    Plain: the (alpha/2, 1 - alpha/2) percentiles. With `units` (how many units were resampled), the expanded
    percentile interval (the percentile levels of +-expanded_z(units)); with `point` (the estimate on the data), bias-
    corrected: the levels move by z0 = Phi^-1(share of resamples below the point); with `jackknife` (the statistic with
    each unit, or group of units, left out) also accelerated (BCa, Efron 1987: a = sum(u^3) / (6 (sum(u^2))^1.5), u the
    jackknife deviations). The audit uses all three (tested on synthetic audits: benchmarks/audit_selfcheck.py).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    z = expanded_z(units, alpha)
    if len(v) < 2 or math.isnan(z):
        return NAN, NAN
    z0 = accel = 0.0
    if point is not None and not math.isnan(point):
        share = (np.sum(v < point) + 0.5 * np.sum(v == point)) / len(v)
        z0 = NormalDist().inv_cdf(min(max(share, 0.5 / len(v)), 1 - 0.5 / len(v)))
    if jackknife is not None:
        u = np.asarray(jackknife, dtype=float)
        u = u[np.isfinite(u)]
        u = u.mean() - u if len(u) else u
        spread = float(np.sum(u ** 2))
        accel = float(np.sum(u ** 3)) / (6 * spread ** 1.5) if spread > 0 else 0.0
    levels = []
    for side in (-z, z):
        shift = z0 + side
        denom = 1 - accel * shift
        levels.append(NormalDist().cdf(z0 + shift / denom) if denom > 0 else (0.0 if side < 0 else 1.0))
    low, high = np.quantile(v, levels)
    return float(low), float(high)


def bootstrap_ci(stat: Callable[..., float], *arrays, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, clusters=None) -> tuple[float, float]:
    """Paired percentile bootstrap: resample items (the same indices for every array), drop nan resamples.

    With `clusters` (one key per item) whole clusters are resampled (see resample_weights; the same seed draws
    the same resamples as resample_weights). Returns the expanded, bias-corrected percentile interval of
    `stat(*resampled)` (percentile_interval with the estimate `stat(*arrays)` and the number of resampled units), or
    (nan, nan) with < 2 valid resamples.
    """
    arrs = [np.asarray(a) for a in arrays]
    if not arrs or len(arrs[0]) == 0:
        return NAN, NAN
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError("bootstrap_ci: all arrays must have the same length")
    positions = np.arange(n)
    values = []
    for counts in resample_weights(n, n_boot, seed, clusters).astype(int):
        idx = np.repeat(positions, counts)
        v = stat(*(a[idx] for a in arrs))
        values.append(NAN if v is None else float(v))
    point = stat(*arrs)
    units = n if clusters is None else len(np.unique(np.asarray(clusters)))
    return percentile_interval(values, alpha, point=NAN if point is None else float(point), units=units)


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
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return x  # already strings (read only: callers never write into it)
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
    cats = np.unique(np.concatenate([x, y])).tolist() if labels is None else [str(c) for c in labels]
    xi, yi = np.full(len(x), -1), np.full(len(y), -1)
    for i, c in enumerate(cats):
        xi[x == c], yi[y == c] = i, i
    keep = (xi >= 0) & (yi >= 0)
    if not keep.any():
        return NAN
    k = len(cats)
    cm = np.bincount(xi[keep] * k + yi[keep], minlength=k * k).reshape(k, k).astype(float)
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


def loo_hits(items: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(hits, counted), items x annotator positions: counted where annotator j rated the item and the majority of
    the others is A or B; hit where annotator j also matches that majority (the parts of loo_accuracy_no_ties).
    Missing ratings (None / nan / "") are dropped first, as human_ceiling does."""
    items = [_clean(r) for r in items]
    width = max((len(r) for r in items), default=0)
    hits, counted = np.zeros((len(items), width)), np.zeros((len(items), width))
    for i, r in enumerate(items):
        for j in range(len(r)):
            maj = _majority(r[:j] + r[j + 1:])
            if maj is not None and maj != "tie":
                counted[i, j], hits[i, j] = 1.0, float(r[j] == maj)
    return hits, counted


def _loo_accuracy(items: list[list[str]]) -> float:
    """Each annotator (position j) against the majority of the others, on items where that majority is A/B."""
    hits, counted = loo_hits(items)
    per_annotator = [hits[:, j].sum() / counted[:, j].sum() for j in range(hits.shape[1]) if counted[:, j].any()]
    return float(np.mean(per_annotator)) if per_annotator else NAN


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


def log_loss(y, p, eps: float = LOG_LOSS_FLOOR) -> float:
    """Mean negative log-likelihood of y under P(A), with p clipped to [eps, 1 - eps] (LOG_LOSS_FLOOR: 0.01)."""
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
    f = lambda u: log_loss(y, apply_temperature(p, math.exp(u)), eps=_EPS)  # noqa: E731
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


def coverage_curve(correct, confidence, thresholds=None, abstain=None) -> list[dict]:
    """For each threshold t keep items with confidence >= t: threshold, coverage, accuracy (nan if none), n.
    Items where `abstain` is True (the judge said tie) are never kept; coverage is the kept share of every item."""
    ok, conf = np.asarray(correct, dtype=bool), np.asarray(confidence, dtype=float)
    decided = np.ones(len(conf), dtype=bool) if abstain is None else ~np.asarray(abstain, dtype=bool)
    if thresholds is None:
        thresholds = np.round(np.arange(0.5, 0.951, 0.05), 2)
    rows = []
    for t in thresholds:
        m = (conf >= t) & decided
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


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (nan, nan) when n == 0. Sound for small n and rates near 0 or 1.
    Fractional counts are allowed (an effective sample size, see the cluster-aware interval in resampling)."""
    if n <= 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---------------------------------------------------------------- trivial baselines and length control

__all__ += ["length_rule_verdicts", "first_shown_verdicts", "length_control_fit", "length_control_arrays",
            "length_control_from_arrays", "length_controlled_agreement",
            "sparse_bin_min_count", "flag_sparse_bins", "coverage_thresholds", "coverage_table"]

LENGTH_CONTROL_RIDGE = 1.0
COVERAGE_FIXED_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
COVERAGE_KEEP_SHARES = tuple(round(1.0 - 0.1 * k, 1) for k in range(10))


def length_rule_verdicts(len_a, len_b, prefer: str = "longer") -> np.ndarray:
    """The verdicts of the rule "always the longer" (prefer="longer") or "always the shorter" response:
    "A" or "B", and "tie" when both responses have the same length (the rule has nothing to go on)."""
    if prefer not in ("longer", "shorter"):
        raise ValueError("prefer must be 'longer' or 'shorter'")
    diff = np.asarray(len_a, dtype=float) - np.asarray(len_b, dtype=float)
    diff = diff if prefer == "longer" else -diff
    return np.where(diff > 0, "A", np.where(diff < 0, "B", "tie"))


def first_shown_verdicts(n: int) -> np.ndarray:
    """The rule "always the response shown first": "A" on every item (A is the gold item's response_a)."""
    return np.full(int(n), "A")


def _fit_logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, max_iter: int = 60) -> np.ndarray:
    """Maximise sum_i w_i loglik_i - ridge / 2 * |beta|^2 (every coefficient penalised, so the terms stay finite
    when a length rule separates the data perfectly) by Newton's method; the objective is strictly concave."""
    beta = np.zeros(X.shape[1])
    penalty = ridge * np.eye(X.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ beta, -35, 35)))
        grad = X.T @ (w * (y - p)) - ridge * beta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + penalty
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta


def length_control_fit(gold, pred, len_a, len_b, ridge: float = LENGTH_CONTROL_RIDGE) -> dict:
    """Length-controlled agreement (an AlpacaEval-style GLM): the judge's agreement with the gold labels once the
    part that a length rule explains is taken out.

    On the items whose gold label is A or B, with h = +1 where gold is A and -1 where it is B, delta = len_a - len_b,
    s = sign(delta) and d = tanh(delta / sd) (sd: the standard deviation of delta over those items; d = 0 if sd = 0),
    fit the logistic regression

        logit P(judge verdict == gold) = a + g*h + b_s*(h*s) + b_d*(h*d)

    which for A/B verdicts is the regression of the judge's decision on the human label and the length difference,
    logit P(judge says A) = g + a*h + b_s*s + b_d*d: b_s, b_d > 0 mean the judge leans to the longer response beyond
    what the human label explains. A judge tie counts as a disagreement (as in accuracy_no_ties). Items are weighted
    so that those where humans preferred the longer response and those where they preferred the shorter one carry
    the same total weight (equal-length items weigh 1): the fit is made on a set where the human preference is
    independent of length. All four coefficients get a ridge penalty `ridge` (weights sum to the item count).
    The length-controlled agreement is the model's agreement with both length terms set to zero, averaged with the
    same weights: sum_i w_i sigmoid(a + g*h_i) / sum_i w_i. A pure length rule scores about 0.5; a judge whose
    verdicts do not depend on length keeps its agreement.

    Returns agreement (nan when there is no gold A/B item, or when lengths differ on some items but humans preferred
    the same side on every one of them: the length rule and the humans cannot be told apart), the coefficients,
    length_sd and the item counts.
    """
    return length_control_from_arrays(*length_control_arrays(gold, pred, len_a, len_b), ridge=ridge)


def length_control_arrays(gold, pred, len_a, len_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The numbers length_control_fit works on: h (+1 / -1 / 0 where gold is A / B / tie), agree (1.0 where the
    verdict equals gold) and delta = len_a - len_b. Resampling these is much faster than resampling the labels."""
    g, p = _labels(gold), _labels(pred)
    h = np.where(g == "A", 1.0, np.where(g == "B", -1.0, 0.0))
    return h, (g == p).astype(float), np.asarray(len_a, dtype=float) - np.asarray(len_b, dtype=float)


def length_control_from_arrays(h, agree, delta, ridge: float = LENGTH_CONTROL_RIDGE) -> dict:
    """length_control_fit on the arrays of length_control_arrays (items with h == 0, gold ties, are left out)."""
    h, agree, delta = (np.asarray(x, dtype=float) for x in (h, agree, delta))
    m = h != 0
    h, agree, delta = h[m], agree[m], delta[m]
    s = np.sign(delta)
    longer, shorter = h * s > 0, h * s < 0
    out: dict = {"agreement": NAN, "coefficients": None, "length_sd": NAN, "n": int(m.sum()),
                 "n_gold_prefers_longer": int(longer.sum()), "n_gold_prefers_shorter": int(shorter.sum()),
                 "n_equal_length": int((s == 0).sum())}
    if not len(h) or (longer.any() != shorter.any()):
        return out
    sd = float(delta.std())
    d = np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)
    w = np.ones(len(h))
    if longer.any():
        unequal = int(longer.sum() + shorter.sum())
        w[longer], w[shorter] = unequal / (2 * longer.sum()), unequal / (2 * shorter.sum())
    X = np.column_stack([np.ones(len(h)), h, h * s, h * d])
    a, gamma, b_s, b_d = _fit_logistic(X, agree, w, ridge)
    out["agreement"] = float(np.sum(w / (1.0 + np.exp(-(a + gamma * h)))) / w.sum())
    out["coefficients"] = {"intercept": float(a), "gold_is_a": float(gamma), "longer_side": float(b_s),
                           "length_difference": float(b_d)}
    out["length_sd"] = sd
    return out


def length_controlled_agreement(gold, pred, len_a, len_b) -> float:
    """`length_control_fit(...)["agreement"]`: a statistic for bootstrap_ci (refitted on every resample)."""
    return float(length_control_fit(gold, pred, len_a, len_b)["agreement"])


def sparse_bin_min_count(n_items: int, min_count: int = 10, min_share: float = 0.02) -> int:
    """A reliability bin is too sparse to read when it holds fewer than max(min_count, ceil(min_share * n)) items."""
    return max(min_count, math.ceil(min_share * n_items - 1e-9))


def flag_sparse_bins(bins: list[dict], n_items: int) -> list[dict]:
    """The reliability bins with "sparse": count < sparse_bin_min_count(n_items) (empty bins are sparse too)."""
    k = sparse_bin_min_count(n_items)
    return [{**b, "sparse": b["count"] < k} for b in bins]


def coverage_thresholds(confidence) -> tuple[list[float], str, list[float | None]]:
    """The thresholds of the coverage table and the rule that chose them: (thresholds, rule, keep shares).

    "fixed": 0.50, 0.55, ..., 0.95, unless more than half of those rows would keep fewer than 10% of the items;
    then "quantile": for each share q in 1.0, 0.9, ..., 0.1 the threshold is the ceil(q * n)-th largest confidence,
    so confidence >= threshold keeps at least that share (more when confidences tie; repeated thresholds dropped).
    """
    conf = np.sort(np.asarray(confidence, dtype=float))[::-1]
    n = len(conf)
    thin = sum(int(np.sum(conf >= t)) < 0.1 * n for t in COVERAGE_FIXED_THRESHOLDS)
    if n == 0 or thin <= len(COVERAGE_FIXED_THRESHOLDS) // 2:
        return list(COVERAGE_FIXED_THRESHOLDS), "fixed", [None] * len(COVERAGE_FIXED_THRESHOLDS)
    thresholds: list[float] = []
    shares: list[float | None] = []
    for q in COVERAGE_KEEP_SHARES:
        t = float(conf[max(1, math.ceil(q * n - 1e-9)) - 1])
        if t not in thresholds:
            thresholds.append(t)
            shares.append(q)
    return thresholds, "quantile", shares


def coverage_table(correct, confidence, abstain=None,
                   interval: Callable[[np.ndarray], tuple[float, float]] | None = None) -> dict:
    """The coverage-vs-agreement table: rule ("fixed" / "quantile", see coverage_thresholds), n_abstained and rows
    with threshold, keep_share (the quantile rule's target share of the decided items, else None), coverage (the
    kept share of every item), n, accuracy (nan if no item is kept) and accuracy_ci95.

    `abstain`: items the judge abstained on (a tie verdict): never kept, never scored, and left out of the choice of
    thresholds. `interval(kept)`: the interval of the agreement on the items of the boolean mask `kept` (default:
    Wilson, items independent)."""
    ok, conf = np.asarray(correct, dtype=bool), np.asarray(confidence, dtype=float)
    decided = np.ones(len(conf), dtype=bool) if abstain is None else ~np.asarray(abstain, dtype=bool)
    if interval is None:
        interval = lambda kept: wilson_interval(int(ok[kept].sum()), int(kept.sum()))  # noqa: E731
    thresholds, rule, shares = coverage_thresholds(conf[decided])
    rows = coverage_curve(ok, conf, thresholds=thresholds, abstain=~decided)
    for row, share in zip(rows, shares):
        row["keep_share"] = share
        row["accuracy_ci95"] = list(interval((conf >= row["threshold"]) & decided))
    return {"rule": rule, "rows": rows, "n_abstained": int((~decided).sum())}
