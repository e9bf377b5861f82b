"""Do the judge's probabilities say anything? The calibration scores beside those of the constant predictor that
always says the base rate, and a test of whether P(A) ranks the items at all.

A small ECE alone proves nothing: the constant predictor P(A) = b, with b the share of gold A among the gold A/B
items, is perfectly calibrated on those items (ECE 0) and knows nothing about any of them. So the report shows the
judge's ECE, Brier and log-loss beside the constant's, and says in words whether P(A) carries information.

The rule (the same on every gold set): P(A) carries information when the 95% interval of its AUC (the chance that a
gold-A item gets a higher P(A) than a gold-B item, ties counting half) excludes 0.5, the AUC of any predictor that
does not look at the items. The AUC reads only the order of the probabilities, so a judge that ranks the items well
but states its probabilities badly (overconfident) is told apart from one that ranks nothing; Brier against the base
rate then says whether the probabilities as stated beat the constant (Brier = uncertainty - resolution +
reliability, and the constant's Brier is the uncertainty b(1 - b)).
"""

from __future__ import annotations

import numpy as np

from rlaif.audit import metrics as M
from rlaif.audit import resampling as R

__all__ = ["auc", "brier_minus_base_rate", "base_rate_scores", "information", "INFORMATION_RULE"]

INFORMATION_RULE = ("P(A) carries information when the 95% interval of its AUC (the chance that a gold-A item gets a "
                    "higher P(A) than a gold-B item, ties half) excludes 0.5, the AUC of any predictor that does not look "
                    "at the items")

_ROWS = 256
"""Resamples per block of the vectorized AUC (bounds its memory: a few blocks x items floats)."""


def auc(y, p, W) -> np.ndarray:
    """The AUC of p for y (1: gold A) under each row of weights W (n_boot, n), ties in p counting half (the
    Mann-Whitney statistic); nan where a resample holds no gold A or no gold B. With one row of ones: the plain AUC."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    W = np.atleast_2d(np.asarray(W, dtype=float))
    order = np.argsort(p, kind="stable")
    ys, ps = y[order], p[order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]]) if len(ps) else np.array([], dtype=int)
    out = np.full(len(W), np.nan)
    if not len(ps):
        return out
    for first in range(0, len(W), _ROWS):
        w = W[first:first + _ROWS][:, order]
        pos = np.add.reduceat(w * ys, starts, axis=1)  # per resample and distinct P(A): weight of gold A, of gold B
        neg = np.add.reduceat(w * (1 - ys), starts, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        wins = np.sum(pos * (below + 0.5 * neg), axis=1)
        out[first:first + len(w)] = np.divide(wins, n_pos * n_neg, out=np.full(len(w), np.nan), where=n_pos * n_neg > 0)
    return out


def brier_minus_base_rate(y, p, W) -> np.ndarray:
    """The judge's Brier minus the Brier b(1 - b) of the constant P(A) = b, b the resample's share of gold A
    (negative: the judge's probabilities beat the base rate)."""
    b = R.ratio(W, y)
    return R.brier(y, p, W) - b * (1 - b)


def base_rate_scores(y) -> dict:
    """The base rate b and the ECE, Brier and log-loss of the constant predictor P(A) = b on the same items."""
    y = np.asarray(y, dtype=float)
    b = float(y.mean()) if len(y) else M.NAN
    constant = np.full(len(y), b)
    return {"base_rate": b, "ece": M.expected_calibration_error(y, constant), "brier": M.brier(y, constant),
            "log_loss": M.log_loss(y, constant)}


def information(y, p, boot: R.Resamples) -> dict:
    """auc and judge_brier_minus_base_rate with their intervals (value, ci95), carries_information (None when there
    is no gold A or no gold B), the rule and a plain verdict."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n = len(y)
    area = (float(auc(y, p, np.ones((1, n)))[0]), boot.stat_ci(lambda W: auc(y, p, W)))
    gap = (float(brier_minus_base_rate(y, p, np.ones((1, n)))[0]), boot.stat_ci(lambda W: brier_minus_base_rate(y, p, W)))
    a_lo, a_hi = area[1]
    measured = not (np.isnan(area[0]) or np.isnan(a_lo))
    carries = bool(a_lo > 0.5 or a_hi < 0.5) if measured else None
    return {"auc": area, "judge_brier_minus_base_rate": gap, "carries_information": carries, "rule": INFORMATION_RULE,
            "verdict": _verdict(carries, area, gap)}


def _ci(value: float, interval) -> str:
    lo, hi = interval
    return f"{value:.3f}" if np.isnan(lo) else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _verdict(carries: bool | None, area, gap) -> str:
    auc_text, gap_text = f"AUC {_ci(*area)}", f"the judge's Brier minus the base rate's {_ci(*gap)}"
    g_lo, g_hi = gap[1]
    if carries is None:
        return ("Whether the judge's probabilities carry information cannot be measured here: the gold A/B items all "
                "prefer the same side, or there are too few of them.")
    if not carries:
        return (f"The judge's probabilities carry no detectable information on this set: they do not rank the gold-A "
                f"items above the gold-B items better than chance ({auc_text}; 0.5 = chance). A low ECE would not "
                f"show otherwise: the constant that always says the base rate is calibrated by construction (ECE 0) "
                f"and knows nothing about any item ({gap_text}).")
    direction = "" if area[0] > 0.5 else ", the wrong way round (gold-B items get the higher P(A))"
    stated = ("and as stated they beat the constant that always says the base rate" if g_hi < 0 else
              "but as stated they score worse than the constant that always says the base rate (miscalibrated: see "
              "temperature scaling)" if g_lo > 0 else
              "but as stated they cannot be told apart from the constant that always says the base rate")
    return f"The judge's probabilities carry information on this set{direction} ({auc_text}), {stated} ({gap_text})."
