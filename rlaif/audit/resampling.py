"""The audit's intervals: one set of bootstrap resamples, the metrics computed on all of them at once, and a
cluster-aware Wilson interval (numpy only).

Resampling unit. Gold items that share a prompt are not independent (the same instruction is easy or hard for the
judge and for the humans alike), so when some prompt holds several items the bootstrap draws prompts with
replacement and keeps all their items (cluster bootstrap); otherwise it draws items. `Resamples.draw` makes that
choice and states it (`unit`).

Vectorized form. A resample is a vector of counts w (how often each item was drawn); `Resamples.weights` stacks
n_boot of them (metrics.resample_weights). A statistic that is a ratio of sums, sum(w * num) / sum(w * den), is
then (W @ num) / (W @ den) for every resample at once. Each function below is the metric of the same name in
`metrics`, written that way: with a single row of ones it returns exactly that metric (the tests check this), with
the count matrix it returns the metric on every resample. Every interval of one audit comes from the same
resamples, so differences between metrics are paired.

Interval kinds. Percentile intervals for the agreement, Brier, bias and human-ceiling metrics; ECE gets an
interval of its own (`ece_interval`: the plug-in ECE is biased upwards, see its docstring); log-loss, a mean of a
right-skewed loss, gets the jackknife-t interval of its log taken back (`Resamples.log_jackknife_t_ci`); the
per-group accuracies get Wilson intervals whose sample size is divided by the design effect of the prompt clusters
(`clustered_wilson`); paired differences between two judges (`rlaif audit compare`) get the estimate +- Student's t
times their delete-a-prompt jackknife standard error (`Resamples.jackknife_t_ci`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from rlaif.audit import metrics as M

__all__ = ["Resamples", "ratio", "accuracy_no_ties", "accuracy_with_ties", "cohen_kappa", "expected_calibration_error",
           "brier", "log_loss", "loo_accuracy", "first_position_rate", "length_preference_gap", "length_controlled_agreement",
           "ece_interval",
           "clustered_wilson", "design_effect", "MIN_UNITS"]


MIN_UNITS = 5
"""Fewest prompts a per-group interval is drawn from when the group's items share prompts (per category in the audit
and in `rlaif audit compare`): fewer cluster totals cannot estimate the spread."""

JACKKNIFE_GROUPS = 400
"""The jackknife (BCa acceleration, jackknife-t intervals) leaves out one unit at a time, or one of at most this many
groups of units."""

JACKKNIFE_CELLS = 2 ** 23
"""The most weights (groups x items) one jackknife matrix holds (64 MiB)."""


@dataclass(frozen=True)
class Resamples:
    """The bootstrap resamples every interval of one audit is read from, and how intervals are read from them:
    expanded (few units), bias-corrected and accelerated percentile intervals (metrics.percentile_interval)."""

    weights: np.ndarray
    """(n_boot, n) counts: how often each item enters each resample."""
    codes: np.ndarray
    """The resampled unit of each item: its prompt's number, or its own."""
    clusters: np.ndarray | None
    """One key per item when whole clusters are resampled, else None."""
    unit: str
    """What is resampled, for the report: "item" or "prompt (C clusters)"."""
    alpha: float = 0.05

    @classmethod
    def draw(cls, n: int, n_boot: int, seed: int = 0, prompts: Sequence[str] | None = None, alpha: float = 0.05) -> Resamples:
        """Resample prompts when some prompt holds more than one of the n items, else items."""
        keys = None if prompts is None else np.asarray(list(prompts), dtype=object).astype(str)
        if keys is not None and len(keys) != n:
            raise ValueError("Resamples.draw: one prompt per item")
        distinct = len(set(keys.tolist())) if keys is not None else n
        if keys is None or distinct == n:
            return cls(M.resample_weights(n, n_boot, seed), np.arange(n), None, "item", alpha)
        codes = np.unique(keys, return_inverse=True)[1].ravel()
        return cls(M.resample_weights(n, n_boot, seed, keys), codes, keys, f"prompt ({distinct} clusters)", alpha)

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])

    @property
    def units(self) -> int:
        """How many units (items or prompts) these items hold."""
        return int(len(np.unique(self.codes)))

    def subset(self, mask) -> Resamples:
        """The same resamples restricted to some items (e.g. the non-tie ones): paired with the full set."""
        mask = np.asarray(mask)
        return Resamples(self.weights[:, mask], self.codes[mask], None if self.clusters is None else self.clusters[mask],
                         self.unit, self.alpha)

    def jackknife(self, always: bool = False) -> np.ndarray | None:
        """(G, n) weights, each row leaving one unit (or one group of units) out; None when there are fewer than 2
        groups. Unless `always`: None as well when the matrix would exceed JACKKNIFE_CELLS, or when there are under 100
        resamples (no acceleration is estimated for so few). With `always` (the jackknife is the interval itself)
        large sets get fewer, bigger groups so the matrix fits: 400 groups up to ~21,000 items, 83 at 100,000."""
        groups_of = np.unique(self.codes, return_inverse=True)[1].ravel()
        groups = min(int(groups_of.max()) + 1 if len(groups_of) else 0, JACKKNIFE_GROUPS)
        n = len(self.codes)
        if always:
            groups = min(groups, JACKKNIFE_CELLS // max(n, 1))
        if groups < 2 or groups * n > JACKKNIFE_CELLS or (self.n_boot < 100 and not always):
            return None
        out = np.ones((groups, n))
        out[groups_of % groups, np.arange(n)] = 0.0
        return out

    def interval(self, values, point: float | None = None, jackknife=None) -> tuple[float, float]:
        """The interval from a statistic's values on the resamples (and its estimate, and its jackknife values)."""
        return M.percentile_interval(values, self.alpha, point=point, units=self.units, jackknife=jackknife)

    def stat_ci(self, stat: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """The interval of a vectorized statistic stat(W) -> one value per row of weights (the functions below)."""
        n = self.weights.shape[1]
        if not n:
            return M.NAN, M.NAN
        jack = self.jackknife()
        return self.interval(stat(self.weights), float(stat(np.ones((1, n)))[0]), None if jack is None else stat(jack))

    def jackknife_t_ci(self, stat: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """Estimate +- t(G - 1) * the delete-a-group jackknife standard error of a vectorized statistic (G: the units,
        or groups of units, left out one at a time; whole prompts when they are resampled). Used for paired
        differences (`rlaif audit compare`): with 17-50 prompts the self-check found the percentile bootstrap of a
        difference too narrow (0.84-0.92 coverage) and this interval at 0.934-0.961 (log-loss: 0.941-0.945).
        (nan, nan) below MIN_UNITS units."""
        n = self.weights.shape[1]
        jack = self.jackknife(always=True) if n else None
        if jack is None or len(jack) < MIN_UNITS:
            return M.NAN, M.NAN
        point = float(stat(np.ones((1, n)))[0])
        values = np.asarray(stat(jack), dtype=float)
        values = values[np.isfinite(values)]
        g = len(values)
        if g < MIN_UNITS or math.isnan(point):
            return M.NAN, M.NAN
        se = math.sqrt((g - 1) / g * float(np.sum((values - values.mean()) ** 2)))
        half = M.t_quantile(1 - self.alpha / 2, g - 1) * se
        return point - half, point + half

    def log_jackknife_t_ci(self, stat: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
        """`jackknife_t_ci` on the log of a positive statistic, taken back: estimate * exp(-+ t * SE of its log).
        Used for log-loss, a mean of a right-skewed loss: when a gold set misses the rare costly items both the
        estimate and its standard error come out low, and the symmetric interval misses above the truth (0.88-0.93
        with shared prompts in the self-check); on the log scale the interval reaches further up than down."""
        lo, hi = self.jackknife_t_ci(lambda W: np.log(np.maximum(stat(W), 1e-300)))
        return (math.exp(lo), math.exp(hi)) if not (math.isnan(lo) or math.isnan(hi)) else (M.NAN, M.NAN)

    def ci(self, stat: Callable[..., float], *arrays) -> tuple[float, float]:
        """The interval of any statistic, called on each resample's items (the slow, general path; not accelerated)."""
        arrs = [np.asarray(a) for a in arrays]
        if not arrs or not len(arrs[0]):
            return M.NAN, M.NAN
        positions = np.arange(len(arrs[0]))
        values = []
        for counts in self.weights.astype(int):
            idx = np.repeat(positions, counts)
            v = stat(*(a[idx] for a in arrs))
            values.append(M.NAN if v is None else float(v))
        point = stat(*arrs)
        return self.interval(values, M.NAN if point is None else float(point))


# ---------------------------------------------------------------- metrics on every resample at once

def _rows(W) -> np.ndarray:
    W = np.asarray(W, dtype=float)
    return W[None, :] if W.ndim == 1 else W


def ratio(W, num, den=None) -> np.ndarray:
    """(W @ num) / (W @ den) per resample (den: all ones when None); nan where the denominator is 0."""
    W = _rows(W)
    top = W @ np.asarray(num, dtype=float)
    bottom = W.sum(1) if den is None else W @ np.asarray(den, dtype=float)
    return np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom > 0)


_labels = M._labels


def accuracy_no_ties(gold, pred, W) -> np.ndarray:
    g, p = _labels(gold), _labels(pred)
    scored = g != "tie"
    return ratio(W, scored & (g == p), scored)


def accuracy_with_ties(gold, pred, W) -> np.ndarray:
    g, p = _labels(gold), _labels(pred)
    return ratio(W, np.where(g == p, 1.0, np.where((g == "tie") ^ (p == "tie"), 0.5, 0.0)))


def cohen_kappa(gold, pred, W, labels: Sequence[str] = ("A", "B", "tie")) -> np.ndarray:
    """Unweighted Cohen's kappa over `labels` (pairs with another label are left out, as metrics.cohen_kappa)."""
    g, p = _labels(gold), _labels(pred)
    k = len(labels)
    gi = np.array([labels.index(x) if x in labels else -1 for x in g.tolist()], dtype=int)
    pi = np.array([labels.index(x) if x in labels else -1 for x in p.tolist()], dtype=int)
    keep = (gi >= 0) & (pi >= 0)
    cells = np.zeros((len(g), k * k))
    cells[np.flatnonzero(keep), (gi * k + pi)[keep]] = 1.0
    table = (_rows(W) @ cells).reshape(-1, k, k)
    n = table.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        po = np.trace(table, axis1=1, axis2=2) / n
        pe = np.einsum("bi,bi->b", table.sum(2), table.sum(1)) / n ** 2
        kappa = (po - pe) / (1 - pe)
    return np.where((n > 0) & (pe < 1), kappa, np.nan)


def _bin_sums(y, p, W, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per resample and bin: weighted count, correct and confidence sums (the bins of metrics.reliability_bins)."""
    conf, correct, bins = M._top_label(y, p, n_bins)
    onehot = np.zeros((len(conf), n_bins))
    onehot[np.arange(len(conf)), bins] = 1.0
    W = _rows(W)
    return W @ onehot, W @ (onehot * correct[:, None]), W @ (onehot * conf[:, None])


def expected_calibration_error(y, p, W, n_bins: int = 10) -> np.ndarray:
    count, right, conf = _bin_sums(y, p, W, n_bins)
    total = count.sum(1)
    return np.divide(np.abs(right - conf).sum(1), total, out=np.full(len(total), np.nan), where=total > 0)


def brier(y, p, W) -> np.ndarray:
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    return ratio(W, (p - y) ** 2)


def log_loss(y, p, W, eps: float = M.LOG_LOSS_FLOOR) -> np.ndarray:
    y, p = np.asarray(y, dtype=float), np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return ratio(W, -(y * np.log(p) + (1 - y) * np.log1p(-p)))


def loo_accuracy(hits, counted, W) -> np.ndarray:
    """metrics.human_ceiling's loo_accuracy_no_ties from metrics.loo_hits: the mean over annotator positions of
    each one's agreement with the majority of the others."""
    hits, counted = np.asarray(hits, dtype=float), np.asarray(counted, dtype=float)
    W = _rows(W)
    if hits.ndim != 2 or not hits.shape[1]:
        return np.full(len(W), np.nan)
    per = np.column_stack([ratio(W, hits[:, j], counted[:, j]) for j in range(hits.shape[1])])
    n_ok = np.isfinite(per).sum(1)
    return np.divide(np.nansum(per, 1), n_ok, out=np.full(len(W), np.nan), where=n_ok > 0)


def first_position_rate(firsts, decisive, W) -> np.ndarray:
    """metrics.first_position_rate with the readings summed per item (firsts: decisive readings for the response
    shown first; decisive: readings != 0.5), so the two orders of one item are resampled together."""
    return ratio(W, firsts, decisive)


def length_preference_gap(gold, pred, len_a, len_b, W) -> np.ndarray:
    """judge_prefers_longer - human_prefers_longer of metrics.length_bias, on the same items (paired)."""
    g, p = _labels(gold), _labels(pred)
    la, lb = np.asarray(len_a), np.asarray(len_b)
    unequal = la != lb
    longer = np.where(la > lb, "A", "B")
    judge, human = unequal & (p != "tie"), unequal & (g != "tie")
    return ratio(W, judge & (p == longer), judge) - ratio(W, human & (g == longer), human)


def length_controlled_agreement(h, agree, delta, W, ridge: float = M.LENGTH_CONTROL_RIDGE, max_iter: int = 60) -> np.ndarray:
    """metrics.length_control_from_arrays(h, agree, delta)["agreement"] on every resample at once: the same weighted,
    ridge-penalised logistic regression (length sd and balancing weights recomputed per resample), fitted by Newton's
    method on all resamples together."""
    h, agree, delta = (np.asarray(x, dtype=float) for x in (h, agree, delta))
    m = h != 0
    h, agree, delta = h[m], agree[m], delta[m]
    W = _rows(W)[:, m]
    s = np.sign(delta)
    longer, shorter = (h * s > 0).astype(float), (h * s < 0).astype(float)
    n_all, n_long, n_short = W.sum(1), W @ longer, W @ shorter
    valid = (n_all > 0) & ((n_long > 0) == (n_short > 0))
    safe = np.where(n_all > 0, n_all, 1.0)
    mean = W @ delta / safe
    sd = np.sqrt(np.maximum(W @ (delta ** 2) / safe - mean ** 2, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(sd[:, None] > 0, np.tanh(delta[None, :] / np.where(sd > 0, sd, 1.0)[:, None]), 0.0)
        unequal = n_long + n_short
        c_long = np.where(n_long > 0, unequal / (2 * n_long), 1.0)
        c_short = np.where(n_short > 0, unequal / (2 * n_short), 1.0)
    w = W * (1.0 + longer * (c_long[:, None] - 1.0) + shorter * (c_short[:, None] - 1.0))
    fixed = np.column_stack([np.ones(len(h)), h, h * s])
    hd = h[None, :] * d
    start = M.length_control_from_arrays(h, agree, delta, ridge)["coefficients"]  # warm start: the full-sample fit
    beta = np.tile([start["intercept"], start["gold_is_a"], start["longer_side"], start["length_difference"]]
                   if start else [0.0] * 4, (len(W), 1))
    eye = ridge * np.eye(4)
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    products = np.column_stack([fixed[:, k] * fixed[:, j] for k, j in pairs])
    active = np.flatnonzero(valid)  # Newton steps only for the resamples that have not converged yet
    for _ in range(max_iter):
        if not len(active):
            break
        everyone = len(active) == len(W)
        bt, wt, hdt = beta[active], (w if everyone else w[active]), (hd if everyone else hd[active])
        p = bt[:, :3] @ fixed.T
        p += bt[:, 3:4] * hdt
        p *= 0.5
        np.tanh(p, out=p)  # sigmoid(x) = (1 + tanh(x / 2)) / 2, in place
        p += 1.0
        p *= 0.5
        r = agree - p
        r *= wt
        v = 1.0 - p
        v *= p
        v *= wt
        grad = np.column_stack([r @ fixed, np.einsum("bi,bi->b", r, hdt)]) - ridge * bt
        hess = np.empty((len(active), 4, 4))
        for (k, j), col in zip(pairs, (v @ products).T):
            hess[:, k, j] = hess[:, j, k] = col
        v *= hdt
        hess[:, 3, :3] = hess[:, :3, 3] = v @ fixed
        hess[:, 3, 3] = np.einsum("bi,bi->b", v, hdt)
        step = np.linalg.solve(hess + eye, grad[:, :, None])[:, :, 0]
        beta[active] = bt + step
        active = active[np.max(np.abs(step), axis=1) >= 1e-7]  # Newton converges quadratically: beta is exact to ~1e-13
    fitted = 1.0 / (1.0 + np.exp(-(beta[:, :1] + beta[:, 1:2] * h[None, :])))
    agreement = (w * fitted).sum(1) / np.where(w.sum(1) > 0, w.sum(1), 1.0)
    return np.where(valid, agreement, np.nan)


# ---------------------------------------------------------------- ECE: an interval from two bounds

def ece_interval(y, p, boot: Resamples, n_bins: int = 10) -> tuple[float, float]:
    """95% interval of the binned ECE (metrics.expected_calibration_error) from two bounds that hold whatever the
    truth, each failing at most ~2.5% of the time: conservative by design (the self-check measures 0.965-1.000).

    Why not the percentile interval: the plug-in ECE sums |accuracy_b - confidence_b| over bins, and the absolute
    value of a noisy difference is biased upwards (a perfectly calibrated judge shows an ECE near 0.1 with ~10 items
    a bin); a resample's ECE is biased again, so percentile intervals sit above the truth (they cover a calibrated
    judge's ECE of 0 never). Reflecting them (the "basic" interval), or inverting a bootstrap test over worlds
    lam * d_b, misses the truth 7-15% of the time where prompts are shared (measured, benchmarks/RESULTS.md).

    With r = correct - confidence, d_b the mean of r in bin b, delta_b its true value and eps_b = d_b - delta_b the
    noise (so e = sum_b pi_b |d_b|, pi_b the bin's share of items, and the truth is sum_b pi_b |delta_b|):
    - lower bound: e - truth = sum_b pi_b (|delta_b + eps_b| - |delta_b|) <= sum_b pi_b |eps_b|, the ECE of the
      noise alone (triangle inequality); the bound is e minus the upper percentile of that over the resamples.
    - upper bound: truth - e = sum_b pi_b (|delta_b| - |delta_b + eps_b|) <= -sum_b pi_b s_b eps_b with s_b the
      sign of delta_b (and for any sign where delta_b = 0), a linear statistic whose upper percentile the resamples
      give; s_b is read from d_b.
    The noise is the resampled residuals r - d_b, whole prompts when they are resampled, each scaled by
    sqrt(n_b / (n_b - 1)) (the spread of a bin mean from its own items is (n_b - 1) / n_b of the true one); the
    item alone in its bin keeps r (it cannot show its own spread). Percentiles are those of +-expanded_z, as every
    interval of the audit.
    """
    conf, correct, bins = M._top_label(y, p, n_bins)
    if not len(conf):
        return M.NAN, M.NAN
    r = correct - conf
    counts = np.bincount(bins, minlength=n_bins).astype(float)
    d = np.divide(np.bincount(bins, weights=r, minlength=n_bins), counts, out=np.zeros(n_bins), where=counts > 0)
    e = float(np.sum(counts * np.abs(d)) / counts.sum())
    onehot = np.zeros((len(conf), n_bins))
    onehot[np.arange(len(conf)), bins] = 1.0
    in_bin = counts[bins]
    noise = np.where(in_bin > 1, (r - d[bins]) * np.sqrt(in_bin / np.maximum(in_bin - 1, 1)), r)
    W = boot.weights
    sums, total = W @ (onehot * noise[:, None]), W.sum(1)  # per resample and bin: the noise's sum; the items
    ok = total > 0
    if ok.sum() < 2:
        return M.NAN, M.NAN
    sums, total = sums[ok], total[ok]
    z = M.expanded_z(boot.units, boot.alpha)
    if np.isnan(z):
        return M.NAN, M.NAN
    level = NormalDist().cdf(z)
    noise_ece = np.abs(sums).sum(1) / total
    linear = -(sums * np.where(d >= 0, 1.0, -1.0)).sum(1) / total
    return max(0.0, e - float(np.quantile(noise_ece, level))), e + max(0.0, float(np.quantile(linear, level)))


# ---------------------------------------------------------------- per-group rates with prompt clusters

def design_effect(hits, trials, clusters) -> float:
    """Variance of the rate sum(hits) / sum(trials) under cluster sampling (the linearised ratio estimator, with the
    C / (C - 1) small-sample factor) over its variance for independent items. It may fall below 1 by chance (prompts
    that happen to agree): clustered_wilson's Student t on C - 1 degrees of freedom already allows for the noise of
    this estimate, and a floor at 1 counted it twice (per-category coverage 0.984 with the floor, 0.974 without, in
    the self-check's categories of 5-9 prompts).
    With a single cluster the whole group counts as one observation (the design effect is its number of trials)."""
    h, t = np.asarray(hits, dtype=float), np.asarray(trials, dtype=float)
    n = t.sum()
    if clusters is None or n <= 0:
        return 1.0
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    codes = codes.ravel()
    y_c, m_c = np.bincount(codes, weights=h), np.bincount(codes, weights=t)
    used = m_c > 0
    c = int(used.sum())
    if c < 2:
        return float(n)
    rate = h.sum() / n
    iid = rate * (1 - rate) / n
    if iid <= 0:
        return 1.0
    clustered = c / (c - 1) * float(np.sum((y_c[used] - rate * m_c[used]) ** 2)) / n ** 2
    return max(clustered / iid, 1.0 / n)  # at most n / (1 / n) items' worth: a group whose prompts all agree exactly


def clustered_wilson(hits, trials, clusters=None, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of sum(hits) / sum(trials) on the effective sample size n / design_effect (Kish), with the
    normal quantile replaced by Student's t on C - 1 degrees of freedom (C: the group's prompts holding a trial; the
    variance came from C cluster totals; Korn and Graubard 1998). The plain Wilson interval when every item is its own
    cluster; (nan, nan) when the group's items share fewer than MIN_UNITS prompts (so few cluster totals cannot
    estimate the spread; with 2-4 prompts the self-check measured 0.976 coverage). `trials` is 1 for the items the rate
    is taken over."""
    h, t = np.asarray(hits, dtype=float), np.asarray(trials, dtype=float)
    n = float(t.sum())
    if n <= 0:
        return M.NAN, M.NAN
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if clusters is not None:
        keys = np.asarray(clusters, dtype=object).astype(str)
        c = len(set(keys[t > 0].tolist()))
        if c < n:  # items share prompts
            if c < MIN_UNITS:
                return M.NAN, M.NAN
            z = M.t_quantile(0.5 + confidence / 2, c - 1)
    n_eff = n / design_effect(h, t, clusters)
    rate = float(h.sum()) / n  # the Wilson interval (metrics.wilson_interval) with quantile z
    denom = 1 + z * z / n_eff
    centre = (rate + z * z / (2 * n_eff)) / denom
    half = z * np.sqrt(rate * (1 - rate) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
