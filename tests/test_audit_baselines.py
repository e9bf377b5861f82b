"""Trivial baselines beside the judge's agreement, length-controlled agreement, the coverage table's thresholds and
the reliability diagram's item counts (rlaif.audit.metrics / compute / report)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from rlaif.audit import metrics as M
from rlaif.audit.gold import GoldItem
from rlaif.audit.judging import AuditRecord


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _records(la, lb, gold) -> list[AuditRecord]:
    """Gold items with responses of the given lengths (only the items matter to the baselines)."""
    return [AuditRecord(GoldItem(id=f"g{i}", prompt=f"q{i}", response_a="a" * int(x), response_b="b" * int(y), label=g), None)
            for i, (x, y, g) in enumerate(zip(la, lb, gold))]


def _length_correlated_set(n, share_longer, seed):
    """Response lengths, and gold labels that prefer the longer response with probability `share_longer`."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(50, 2000, n), rng.integers(50, 2000, n)
    longer = np.where(la > lb, "A", np.where(la < lb, "B", "tie"))
    other = np.where(longer == "A", "B", "A")
    gold = np.where(rng.random(n) < share_longer, longer, other)
    gold = np.where(longer == "tie", "A", gold)
    return rng, la, lb, gold


def _flip(labels, rng, keep):
    """Each A/B label kept with probability `keep`, else swapped."""
    swapped = np.where(labels == "A", "B", "A")
    return np.where(rng.random(len(labels)) < keep, labels, swapped)


# ---------------------------------------------------------------- baselines by hand

def test_length_rules_and_first_shown_by_hand():
    from rlaif.audit.compute import _baselines

    la, lb = [10, 5, 7, 3], [4, 9, 7, 8]
    gold = np.array(["A", "A", "B", "tie"])
    assert M.length_rule_verdicts(la, lb).tolist() == ["A", "B", "tie", "B"]  # equal lengths: the rule says tie
    assert M.length_rule_verdicts(la, lb, "shorter").tolist() == ["B", "A", "tie", "A"]
    assert M.first_shown_verdicts(4).tolist() == ["A"] * 4
    with pytest.raises(ValueError):
        M.length_rule_verdicts(la, lb, "middle")

    pred = np.array(["A", "A", "B", "A"])  # right on all three gold A/B items
    out = _baselines(_records(la, lb, gold), gold, pred, n_boot=200, seed=0)
    rules = out["rules"]
    # no ties (items 0-2): longer right, wrong, tie (wrong) -> 1/3; shorter wrong, right, tie -> 1/3; first shown A, A, A -> 2/3
    assert rules["always_longer"]["accuracy_no_ties"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert rules["always_shorter"]["accuracy_no_ties"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert rules["always_first_shown"]["accuracy_no_ties"]["value"] == pytest.approx(2 / 3, abs=1e-4)
    # with ties: longer 1 + 0 + 0.5 (rule tie vs gold B) + 0.5 (gold tie vs rule B); first shown 1 + 1 + 0 + 0.5
    assert rules["always_longer"]["accuracy_with_ties"]["value"] == pytest.approx(0.5)
    assert rules["always_first_shown"]["accuracy_with_ties"]["value"] == pytest.approx(2.5 / 4)
    assert rules["always_longer"]["verdicts"] == {"A": 1, "B": 2, "tie": 1}
    assert rules["always_first_shown"]["label"] == "always the first shown (A)"
    for row in rules.values():
        lo, hi = row["accuracy_no_ties"]["ci95"]
        assert lo <= row["accuracy_no_ties"]["value"] <= hi
    vs = out["judge_vs_best_length_rule"]
    assert vs["rule"] == "always_longer" and vs["judge_minus_rule"]["value"] == pytest.approx(2 / 3, abs=1e-4)
    # three items cannot show it: the bootstrap margin reaches 0, so the verdict is no
    assert vs["judge_beats_rule"] is False and "does NOT beat" in vs["verdict"]


def test_judge_against_the_best_length_rule():
    """The embedded judge's case: humans prefer the longer response 18% of the time, the judge agrees 60%."""
    from rlaif.audit.compute import _baselines

    rng, la, lb, gold = _length_correlated_set(400, 0.18, seed=3)
    weak = _flip(gold, rng, 0.6)
    out = _baselines(_records(la, lb, gold), gold, weak, n_boot=300, seed=0)
    vs = out["judge_vs_best_length_rule"]
    assert vs["rule"] == "always_shorter" and not vs["judge_beats_rule"]
    assert vs["judge_minus_rule"]["ci95"][1] < 0 and "does NOT beat the best length rule (always the shorter" in vs["verdict"]
    assert "it does worse" in vs["verdict"]
    strong = _flip(gold, rng, 0.95)
    vs = _baselines(_records(la, lb, gold), gold, strong, n_boot=300, seed=0)["judge_vs_best_length_rule"]
    assert vs["judge_beats_rule"] and vs["judge_minus_rule"]["ci95"][0] > 0 and vs["verdict"].startswith("The judge beats")


# ---------------------------------------------------------------- length control

def test_length_control_removes_a_pure_length_rule_and_keeps_a_length_free_judge():
    rng, la, lb, gold = _length_correlated_set(3000, 0.8, seed=1)
    d = np.tanh((la - lb) / np.std(la - lb))
    always_longer = M.length_rule_verdicts(la, lb)
    noisy_longer = np.where(rng.random(len(gold)) < _sigmoid(3 * d), "A", "B")  # decides on length alone, with noise
    length_free = _flip(gold, rng, 0.7)

    for judge in (always_longer, noisy_longer):
        raw = M.accuracy_no_ties(gold, judge)
        fit = M.length_control_fit(gold, judge, la, lb)
        assert raw > 0.65, "on this set a length rule agrees well with the humans"
        assert fit["agreement"] == pytest.approx(0.5, abs=0.05), "once length is taken out, nothing is left"
        assert fit["coefficients"]["longer_side"] + fit["coefficients"]["length_difference"] > 1.5
    raw = M.accuracy_no_ties(gold, length_free)
    fit = M.length_control_fit(gold, length_free, la, lb)
    assert fit["agreement"] == pytest.approx(raw, abs=0.02) and raw == pytest.approx(0.7, abs=0.03)
    assert abs(fit["coefficients"]["longer_side"]) < 0.3 and abs(fit["coefficients"]["length_difference"]) < 0.5
    assert fit["n_gold_prefers_longer"] + fit["n_gold_prefers_shorter"] + fit["n_equal_length"] == fit["n"] == 3000
    assert M.length_controlled_agreement(gold, length_free, la, lb) == fit["agreement"]


def test_length_controlled_interval_in_the_audit():
    from rlaif.audit.compute import _baselines

    _, la, lb, gold = _length_correlated_set(600, 0.8, seed=2)
    judge = M.length_rule_verdicts(la, lb)
    out = _baselines(_records(la, lb, gold), gold, judge, n_boot=200, seed=0)
    lc = out["length_controlled"]
    lo, hi = lc["accuracy_no_ties"]["ci95"]
    assert lo < 0.5 < hi and hi < out["rules"]["always_longer"]["accuracy_no_ties"]["value"] - 0.1
    assert lc["coefficients"]["longer_side"] > 1 and lc["length_sd"] > 0
    assert "tanh" in out["definitions"]["length_controlled"]


def test_length_control_edge_cases():
    # equal lengths everywhere: nothing to control, the agreement stays (ridge shrinks it a little towards 0.5)
    gold = np.array(["A", "B"] * 20)
    pred = np.where(np.arange(40) % 10 == 0, np.where(gold == "A", "B", "A"), gold)
    fit = M.length_control_fit(gold, pred, [5] * 40, [5] * 40)
    assert fit["n_equal_length"] == 40 and 0.8 < fit["agreement"] <= 0.9
    # humans always prefer the longer response: the humans and the rule cannot be told apart
    fit = M.length_control_fit(["A", "B"], ["A", "B"], [9, 1], [1, 9])
    assert math.isnan(fit["agreement"]) and fit["coefficients"] is None
    assert math.isnan(M.length_controlled_agreement(["tie"], ["A"], [1], [2]))
    # a judge tie counts as a disagreement, as in accuracy_no_ties
    h, agree, delta = M.length_control_arrays(["A", "B", "tie"], ["tie", "B", "tie"], [3, 1, 2], [1, 3, 2])
    assert h.tolist() == [1, -1, 0] and agree.tolist() == [0, 1, 1] and delta.tolist() == [2, -2, 0]


# ---------------------------------------------------------------- coverage thresholds and reliability counts

def test_coverage_switches_to_confidence_quantiles_when_every_p_is_near_half():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.45, 0.55, 300)
    correct = rng.random(300) < 0.6
    conf = np.maximum(p, 1 - p)
    fixed = M.coverage_curve(correct, conf)
    assert sum(r["n"] == 0 for r in fixed) >= 8, "the fixed thresholds say nothing here"
    table = M.coverage_table(correct, conf)
    rows = table["rows"]
    assert table["rule"] == "quantile" and len(rows) == 10
    assert [r["keep_share"] for r in rows] == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert [r["n"] for r in rows] == [300, 270, 240, 210, 180, 150, 120, 90, 60, 30]
    cov = [r["coverage"] for r in rows]
    assert all(b < a for a, b in zip(cov, cov[1:])) and all(0.5 <= r["threshold"] <= 0.55 for r in rows)
    for r in rows:
        lo, hi = r["accuracy_ci95"]
        assert lo < r["accuracy"] < hi and hi - lo < 0.4

    informative = rng.uniform(0.5, 1.0, 1000)
    table = M.coverage_table(rng.random(1000) < informative, informative)
    assert table["rule"] == "fixed" and [r["threshold"] for r in table["rows"]] == list(M.COVERAGE_FIXED_THRESHOLDS)
    assert all(r["keep_share"] is None for r in table["rows"])
    # tied confidences: each threshold appears once and keeps at least its share
    thresholds, rule, shares = M.coverage_thresholds([0.51] * 50 + [0.52] * 50)
    assert rule == "quantile" and thresholds == [0.51, 0.52] and shares == [1.0, 0.5]


def test_reliability_bins_carry_counts_and_sparse_marks():
    assert M.sparse_bin_min_count(300) == 10 and M.sparse_bin_min_count(1000) == 20
    bins = M.flag_sparse_bins(M.reliability_bins([1] * 12 + [0] * 3, [0.97] * 12 + [0.62] * 3), 15)
    assert [b["count"] for b in bins if b["count"]] == [3, 12]
    assert [b["sparse"] for b in bins if b["count"]] == [True, False]


def _judged(p_a, gold_a, la, lb) -> list[AuditRecord]:
    """Gold items judged (both orders) by a fake judge that reads P(A better) = p_a[i]."""
    from rlaif.audit.judging import gold_pair
    from rlaif.backends import Choice, Completion, FakeBackend
    from rlaif.config import load_judge_config
    from rlaif.judging.pairwise import PairwiseJudge

    items = [GoldItem(id=f"s{i}", prompt=f"item {i}", response_a=f"a{i}: " + "x" * int(la[i]), response_b=f"b{i}: " + "y" * int(lb[i]),
                      label="A" if g else "B") for i, g in enumerate(gold_a)]

    def handler(request):
        user = request.messages[-1].content
        i = int(re.search(r"item (\d+)", user).group(1))
        p_first = p_a[i] if user.index(f"a{i}: ") < user.index(f"b{i}: ") else 1 - p_a[i]
        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p_first), "B": math.log(1 - p_first)}], tokens=1)])

    judge = PairwiseJudge(load_judge_config("smollm2-pairwise"), FakeBackend(handler))
    return [AuditRecord(i, j) for i, j in zip(items, judge.judge([gold_pair(i) for i in items]))]


def test_flat_judge_audit_report(tmp_path, monkeypatch):
    """Every P(A) in [0.45, 0.55], humans prefer the shorter response: the report says so in words, tables and pictures."""
    import matplotlib.pyplot as plt

    from rlaif.audit.compute import compute_audit
    from rlaif.audit.report import write_report

    rng = np.random.default_rng(11)
    n = 300
    la, lb = rng.integers(100, 2000, n), rng.integers(100, 2000, n)
    gold_a = np.where(rng.random(n) < 0.18, la > lb, la < lb)
    judge_a = np.where(rng.random(n) < 0.6, gold_a, ~gold_a)
    p_a = np.where(judge_a, rng.uniform(0.501, 0.55, n), rng.uniform(0.45, 0.499, n))
    p_a[:5] = [0.9, 0.85, 0.8, 0.1, 0.15]  # a few confident items: sparse reliability bins
    metrics = compute_audit(_judged(p_a, gold_a, la, lb), n_boot=200)

    cal = metrics["calibration"]
    assert cal["coverage_rule"] == "quantile" and "quantiles" in cal["coverage_rule_text"]
    assert all(r["n"] > 0 for r in cal["coverage_curve"])
    assert sum(b["count"] for b in cal["reliability"]) == n and cal["reliability_sparse_below"] == 10
    assert [b["sparse"] for b in cal["reliability"]] == [b["count"] < 10 for b in cal["reliability"]]
    assert any(b["sparse"] and b["count"] for b in cal["reliability"])
    assert metrics["baselines"]["judge_vs_best_length_rule"]["rule"] == "always_shorter"

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    write_report(tmp_path, metrics, {"judge": "flat", "gold": "synthetic"})
    report = (tmp_path / "report.md").read_text()
    agreement = report.split("## Agreement with the human labels")[1].split("## Calibration")[0]
    for row in ("| always the longer |", "| always the shorter |", "| always the first shown (A) |", "| length-controlled judge |"):
        assert row in agreement
    assert agreement.lstrip().startswith("The judge does NOT beat the best length rule (always the shorter:")
    assert "target share kept" in report and "confidence quantiles" in report and "| 10% |" in report
    assert "*" in report.split("Reliability bins")[1].split("Coverage vs agreement")[0]
    assert "<td>length-controlled judge</td>" in (tmp_path / "report.html").read_text()

    reliability = figures[0]
    curve_axis, hist_axis = reliability.axes
    hollow = [line for line in curve_axis.lines if line.get_marker() in ("o", "s") and line.get_markerfacecolor() == "white"]
    sparse = sum(1 for key in ("reliability", "reliability_after_temperature") for b in cal[key] if b["sparse"] and b["count"])
    assert len(hollow) == sparse > 0
    assert any("hollow" in t.get_text() for t in curve_axis.get_legend().get_texts())
    bars = sorted(round(p.get_height()) for p in hist_axis.patches if p.get_height() > 0)
    assert bars == sorted(b["count"] for key in ("reliability", "reliability_after_temperature") for b in cal[key] if b["count"])
    for fig in figures:
        close(fig)
