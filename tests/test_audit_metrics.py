"""rlaif.audit.metrics against scikit-learn / statsmodels, published worked examples, hand-computed cases
and synthetic judges whose accuracy and miscalibration are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, cohen_kappa_score
from sklearn.metrics import log_loss as sk_log_loss
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from rlaif.audit import metrics as M

LABELS = np.array(["A", "B", "tie"])
SEEDS = range(5)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _noisy_copy(rng, truth, accuracy):
    """Each label kept with probability `accuracy`, else replaced by one of the other labels."""
    out = truth.copy()
    flip = rng.random(len(truth)) >= accuracy
    for i in np.flatnonzero(flip):
        out[i] = rng.choice([c for c in LABELS if c != truth[i]])
    return out


# ---------------------------------------------------------------- against reference implementations

@pytest.mark.parametrize("seed", SEEDS)
def test_cohen_kappa_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.choice(LABELS, size=200, p=[0.5, 0.35, 0.15])
    b = _noisy_copy(rng, a, 0.7)
    assert M.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    # an explicit label list drops the pairs outside it, exactly as sklearn does
    assert M.cohen_kappa(a, b, labels=["A", "B"]) == pytest.approx(cohen_kappa_score(a, b, labels=["A", "B"]), abs=1e-12)
    assert M.cohen_kappa(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_fleiss_kappa_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, size=150, p=[0.45, 0.45, 0.1])
    raters = np.array([_noisy_copy(rng, truth, 0.75) for _ in range(4)]).T  # items x raters
    table, _ = aggregate_raters(raters)
    assert M.fleiss_kappa(raters.tolist()) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)


def test_fleiss_kappa_rejects_unequal_rater_counts():
    with pytest.raises(ValueError):
        M.fleiss_kappa([["A", "B", "A"], ["A", "B"]])


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_and_log_loss_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, size=300)
    y = (rng.random(300) < p).astype(float)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert M.log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), abs=1e-12)


def test_krippendorff_alpha_published_examples():
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units with missing
    # values: nominal alpha = 0.743 (unit 12 has a single rating and drops out).
    obs = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[o[u] for o in obs] for u in range(12)]
    assert M.krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)
    # Same paper, 2 observers x 10 binary units: alpha = 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert M.krippendorff_alpha_nominal([[x, y] for x, y in zip(a, b)]) == pytest.approx(0.095, abs=5e-4)
    assert M.krippendorff_alpha_nominal([["A", "A"], ["B", "B"], ["A"]]) == pytest.approx(1.0)


# ---------------------------------------------------------------- hand-computed cases

def test_verdicts_and_accuracies_by_hand():
    assert M.verdicts_from_p([0.9, 0.1, 0.5, 0.52, 0.47], tie_margin=0.05).tolist() == ["A", "B", "tie", "tie", "tie"]
    assert M.verdicts_from_p([0.51, 0.5]).tolist() == ["A", "tie"]
    gold = ["A", "B", "A", "tie", "tie", "B"]
    pred = ["A", "A", "tie", "tie", "B", "B"]
    # no ties: items 0,1,2,5 -> right, wrong, wrong (judge tie), right
    assert M.accuracy_no_ties(gold, pred) == pytest.approx(2 / 4)
    # with ties: 1 + 0 + 0.5 + 1 + 0.5 + 1
    assert M.accuracy_with_ties(gold, pred) == pytest.approx(4 / 6)
    assert math.isnan(M.accuracy_no_ties(["tie"], ["A"]))


def test_breakdown_by_hand():
    table = M.breakdown(["x", "x", "y", "y", "y"], ["A", "B", "A", "B", "tie"], ["A", "B", "B", "B", "A"])
    assert table["x"] == {"n": 2, "accuracy_no_ties": 1.0, "cohen_kappa": 1.0}
    assert table["y"]["n"] == 3 and table["y"]["accuracy_no_ties"] == pytest.approx(0.5)
    assert table["y"]["cohen_kappa"] == pytest.approx(cohen_kappa_score(["A", "B", "tie"], ["B", "B", "A"]))


def test_ece_and_reliability_bins_by_hand():
    y = [1, 0, 0, 1]
    p = [0.92, 0.92, 0.17, 0.62]  # confidences 0.92, 0.92, 0.83, 0.62; correct T, F, T, T
    # bins of width 0.05: {0.92, 0.92} acc 0.5; {0.83} acc 1; {0.62} acc 1
    expected = 0.5 * abs(0.5 - 0.92) + 0.25 * abs(1 - 0.83) + 0.25 * abs(1 - 0.62)
    assert M.expected_calibration_error(y, p) == pytest.approx(expected)
    bins = M.reliability_bins(y, p)
    assert len(bins) == 10 and bins[0]["lo"] == pytest.approx(0.5) and bins[-1]["hi"] == pytest.approx(1.0)
    assert [b["count"] for b in bins] == [0, 0, 1, 0, 0, 0, 1, 0, 2, 0]
    assert bins[8]["accuracy"] == pytest.approx(0.5) and bins[8]["mean_confidence"] == pytest.approx(0.92)
    assert bins[0]["accuracy"] is None and bins[0]["mean_confidence"] is None


def test_bias_metrics_by_hand():
    # same side of 0.5 in both orders: items 0, 2 and 3 (both exactly 0.5); not 1 nor 4 (undecided once)
    assert M.position_consistency([0.8, 0.7, 0.3, 0.5, 0.5], [0.6, 0.4, 0.1, 0.5, 0.3]) == pytest.approx(3 / 5)
    # decisive verdicts 0.9, 0.8, 0.2, 0.7 -> 3 of 4 picked the first-shown response; 0.5 is not decisive
    assert M.first_position_rate([0.9, 0.8, 0.2, 0.7, 0.5]) == pytest.approx(3 / 4)
    gold = ["A", "B", "tie", "A", "B"]
    pred = ["A", "A", "A", "tie", "B"]
    len_a, len_b = [10, 5, 20, 30, 7], [3, 5, 10, 1, 9]  # item 1 equal lengths; longer: A, -, A, A, B
    out = M.length_bias(gold, pred, len_a, len_b)
    assert out["n"] == 4
    assert out["judge_prefers_longer"] == pytest.approx(3 / 3)  # items 0, 2, 4 (item 3 judge tie)
    assert out["human_prefers_longer"] == pytest.approx(3 / 3)  # items 0, 3, 4 (item 2 gold tie)
    out = M.length_bias(["B", "A"], ["B", "B"], [10, 10], [1, 1])
    assert out == {"judge_prefers_longer": 0.0, "human_prefers_longer": 0.5, "n": 2}


def test_sample_size_for_width():
    assert M.sample_size_for_width(0.1) == 385
    assert M.sample_size_for_width(0.05) == 1537
    assert M.sample_size_for_width(0.1, p=0.8) < 385
    finite = [M.sample_size_for_width(0.1, population=n) for n in (100, 500, 2000, 10**6)]
    assert finite == sorted(finite) and all(f < 385 for f in finite[:3]) and finite[-1] <= 385
    assert finite[1] == math.ceil(385 / (1 + 384 / 500))


def test_human_ceiling_by_hand():
    items = [["A", "A", "B"], ["A", "A", "A"], ["tie", "tie", "A"]]
    out = M.human_ceiling(items)
    # pairs agreeing: 1/3, 3/3, 1/3
    assert out["mean_pairwise_agreement"] == pytest.approx((1 / 3 + 1 + 1 / 3) / 3)
    # rater 0 vs majority of others: item0 (A,B) undefined, item1 A right, item2 (tie,A) undefined -> 1
    # rater 1: same -> 1; rater 2: item0 maj A vs B wrong, item1 right, item2 maj tie -> skipped -> 0.5
    assert out["loo_accuracy_no_ties"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert out["n_items"] == 3 and out["n_annotators"] == 3
    assert math.isnan(M.human_ceiling([["A", "B"], ["A", "A", "B"]])["fleiss_kappa"])


# ---------------------------------------------------------------- bootstrap on judges of known accuracy

def test_bootstrap_ci_pairs_arrays_and_drops_nan():
    a = np.arange(50.0)
    low, high = M.bootstrap_ci(lambda x, y: float(np.mean(x - y)), a, a.copy(), n_boot=200)
    assert low == high == 0.0  # paired: the same indices for both arrays
    assert all(math.isnan(v) for v in M.bootstrap_ci(lambda x: float("nan"), a, n_boot=50))
    assert M.bootstrap_ci(np.mean, a, n_boot=300, seed=3) == M.bootstrap_ci(np.mean, a, n_boot=300, seed=3)
    x = np.random.default_rng(0).normal(size=400)  # percentile interval of a mean ~ mean +- 1.96 SE
    low, high = M.bootstrap_ci(np.mean, x, n_boot=4000, seed=1)
    se = x.std() / 20
    assert low == pytest.approx(x.mean() - 1.96 * se, abs=0.05 * se)
    assert high == pytest.approx(x.mean() + 1.96 * se, abs=0.05 * se)


def test_bootstrap_ci_covers_known_judge_accuracy():
    covered = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        gold = rng.choice(["A", "B"], size=3000)
        right = rng.random(3000) < 0.8
        pred = np.where(right, gold, np.where(gold == "A", "B", "A"))
        low, high = M.bootstrap_ci(M.accuracy_no_ties, gold, pred, n_boot=500, seed=seed)
        assert 0.022 < high - low < 0.036  # analytic: 2 * 1.96 * sqrt(0.8 * 0.2 / 3000) = 0.0286
        covered += low <= 0.8 <= high
    assert covered >= 8


def test_human_ceiling_synthetic_raters():
    rng = np.random.default_rng(7)
    gold = rng.choice(["A", "B"], size=4000)
    raters = np.array([np.where(rng.random(4000) < 0.9, gold, np.where(gold == "A", "B", "A")) for _ in range(3)]).T
    out = M.human_ceiling(raters.tolist())
    # the other two agree w.p. 0.82 (both right 0.81, both wrong 0.01); then the rater matches them w.p.
    # (0.9 * 0.81 + 0.1 * 0.01) / 0.82
    assert out["loo_accuracy_no_ties"] == pytest.approx((0.9 * 0.81 + 0.1 * 0.01) / 0.82, abs=0.015)
    assert out["mean_pairwise_agreement"] == pytest.approx(0.82, abs=0.015)
    table, _ = aggregate_raters(raters)
    assert out["fleiss_kappa"] == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-12)
    assert out["krippendorff_alpha"] == pytest.approx(out["fleiss_kappa"], abs=0.01)  # large-sample agreement


# ---------------------------------------------------------------- calibration on judges of known miscalibration

def _judge(seed, n, temperature):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=n)
    y = (rng.random(n) < _sigmoid(z)).astype(float)
    return y, _sigmoid(temperature * z)


def test_temperature_recovers_known_overconfidence():
    y, p = _judge(0, 5000, 3.0)
    assert M.fit_temperature(y, p) == pytest.approx(3.0, rel=0.10)
    assert M.apply_temperature([0.5, _sigmoid(3.0)], 3.0) == pytest.approx([0.5, _sigmoid(1.0)])
    cv = M.cross_validated_temperature(y, p, k=5, seed=0)
    assert len(cv["temperatures"]) == 5 and all(t == pytest.approx(3.0, rel=0.15) for t in cv["temperatures"])
    assert len(cv["p_calibrated"]) == len(y)
    assert cv["after"]["ece"] < cv["before"]["ece"] / 2
    assert cv["after"]["log_loss"] < cv["before"]["log_loss"]
    assert cv["after"]["brier"] < cv["before"]["brier"]
    assert cv["before"]["ece"] == pytest.approx(M.expected_calibration_error(y, p))


def test_well_calibrated_judge():
    y, p = _judge(1, 5000, 1.0)
    assert M.expected_calibration_error(y, p) < 0.03
    assert M.fit_temperature(y, p) == pytest.approx(1.0, rel=0.10)
    y_bad, p_bad = _judge(1, 5000, 3.0)
    assert M.expected_calibration_error(y_bad, p_bad) > 0.08  # the same items, overconfident


def test_cross_validated_temperature_small_samples():
    out = M.cross_validated_temperature([1, 0, 1], [0.9, 0.2, 0.6])
    assert out["temperatures"] == [] and out["after"] == out["before"]
    assert list(out["p_calibrated"]) == pytest.approx([0.9, 0.2, 0.6])
    out = M.cross_validated_temperature([1, 0, 1, 0, 1, 1], [0.9, 0.2, 0.6, 0.4, 0.7, 0.3], k=5)
    assert len(out["temperatures"]) == 3  # 6 < 2k items -> k = 6 // 2


def test_coverage_curve_informative_confidence():
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.5, 1.0, size=4000)
    correct = rng.random(4000) < conf  # confidence is the true chance of being right
    rows = M.coverage_curve(correct, conf)
    assert [r["threshold"] for r in rows] == pytest.approx(np.arange(0.5, 0.951, 0.05))
    assert rows[0]["coverage"] == 1.0 and rows[0]["n"] == 4000
    acc, cov = [r["accuracy"] for r in rows], [r["coverage"] for r in rows]
    assert all(b > a for a, b in zip(acc, acc[1:])) and acc[-1] > acc[0] + 0.15
    assert all(b < a for a, b in zip(cov, cov[1:]))
    assert M.coverage_curve([True, False], [0.5, 0.7], thresholds=[0.7])[0]["n"] == 1  # confidence >= t kept
    empty = M.coverage_curve([True], [0.6], thresholds=[0.9])[0]
    assert empty["n"] == 0 and empty["coverage"] == 0.0 and math.isnan(empty["accuracy"])
