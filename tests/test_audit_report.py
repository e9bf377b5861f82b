"""What the audit report says about calibration, coverage, per-group counts and length: the numbers in
metrics.json and the words in report.md (rlaif.audit.compute / report), on synthetic judged gold items."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlaif.audit import metrics as M
from rlaif.audit import resampling as R
from rlaif.audit.compute import compute_audit
from rlaif.audit.gold import GoldItem
from rlaif.audit.judging import AuditRecord
from rlaif.audit.report import write_report
from rlaif.records import TIE_PREFIX, Judgment


def _records(p_a, gold, prompts=None, categories=None, la=None, lb=None) -> list[AuditRecord]:
    """Gold items judged with P(A better) = p_a[i] (0.5: a judge tie); prompts, categories and response lengths optional."""
    n = len(p_a)
    prompts = prompts if prompts is not None else [f"q{i}" for i in range(n)]
    la = la if la is not None else [10] * n
    lb = lb if lb is not None else [12] * n
    out = []
    for i in range(n):
        item = GoldItem(id=f"g{i}", prompt=str(prompts[i]), response_a="a" * int(la[i]), response_b="b" * int(lb[i]),
                        label=str(gold[i]), category=None if categories is None else str(categories[i]))
        tie = float(p_a[i]) == 0.5
        judgment = Judgment.model_construct(key=f"k{i}", pair_id=f"g{i}", pair_key=f"pk{i}", per_principle=[], members=[],
                                            p_first=None if tie else float(p_a[i]), reason=TIE_PREFIX + "equal" if tie else None,
                                            principle_ids=["helpful"])
        out.append(AuditRecord(item, judgment))
    return out


def _report(tmp_path, metrics) -> tuple[str, dict]:
    write_report(tmp_path, metrics, {"judge": "synthetic", "gold": "synthetic"})
    return (tmp_path / "report.md").read_text(), json.loads((tmp_path / "metrics.json").read_text())


# ---------------------------------------------------------------- coverage table: judge ties, clustered intervals

def test_coverage_table_counts_judge_ties_apart(tmp_path):
    """A judge tie is an abstention: never kept, never scored as "B", counted on its own."""
    rng = np.random.default_rng(0)
    gold = np.array(["A"] * 20 + ["B"] * 30)
    p_a = np.where(gold == "A", rng.uniform(0.6, 0.9, 50), rng.uniform(0.1, 0.4, 50))
    p_a[:8] = 1 - p_a[:8]  # 8 confident mistakes on gold A
    p_a[30:40] = 0.5  # the judge ties on 10 gold-B items: read as "B" they would all count as right
    metrics = compute_audit(_records(p_a, gold), n_boot=100)
    cal = metrics["calibration"]
    assert cal["coverage_judge_ties"] == 10
    first = cal["coverage_curve"][0]
    assert first["threshold"] == 0.5 and first["n"] == 40 and first["coverage"] == pytest.approx(0.8)
    assert first["accuracy"] == pytest.approx(32 / 40)  # 12 right of gold A + 20 right of gold B; ties left out
    assert all(r["n"] <= 40 for r in cal["coverage_curve"])

    report, saved = _report(tmp_path, metrics)
    assert saved["calibration"]["coverage_judge_ties"] == 10
    assert "A judge tie is an abstention, never kept nor scored as A or B: judge ties 10 of 50 items." in report

    # the table itself: abstaining items are never kept, coverage is over every item
    table = M.coverage_table([True, False, True, True], [0.9, 0.7, 0.5, 0.5], abstain=[False, False, True, True])
    assert [r["n"] for r in table["rows"][:5]] == [2, 2, 2, 2, 2] and table["rows"][0]["coverage"] == 0.5
    assert table["rows"][0]["accuracy"] == 0.5 and table["n_abstained"] == 2


def test_coverage_intervals_use_prompt_clusters(tmp_path):
    """Items sharing a prompt: the coverage rows get the clustered Wilson interval of the per-category accuracies."""
    prompts = np.repeat([f"p{k}" for k in range(10)], 6)
    right = np.repeat([True] * 7 + [False] * 3, 6)  # whole prompts right or wrong: a large design effect
    gold = np.array(["A", "B"] * 30)
    conf = np.tile([0.6, 0.7, 0.8, 0.9, 0.95, 0.99], 10)
    p_a = np.where((gold == "A") == right, conf, 1 - conf)
    metrics = compute_audit(_records(p_a, gold, prompts=prompts), n_boot=100)
    row = metrics["calibration"]["coverage_curve"][0]
    assert row["n"] == 60 and row["accuracy"] == pytest.approx(0.7)
    clustered = R.clustered_wilson(right, np.ones(60), prompts)
    plain = M.wilson_interval(42, 60)
    assert row["accuracy_ci95"] == pytest.approx(list(clustered), abs=1e-4)
    assert clustered[1] - clustered[0] > 1.5 * (plain[1] - plain[0])
    report, _ = _report(tmp_path, metrics)
    assert "agreement [95% CI: Wilson, prompt clusters]" in report


# ---------------------------------------------------------------- coverage plot: the trivial baselines

def test_coverage_plot_draws_the_trivial_baselines(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    n = 80
    la, lb = rng.integers(20, 400, n), rng.integers(20, 400, n)
    gold = np.where(rng.random(n) < 0.75, np.where(la > lb, "A", "B"), np.where(la > lb, "B", "A"))
    p_a = np.where(rng.random(n) < 0.6, np.where(gold == "A", 0.8, 0.2), np.where(gold == "A", 0.3, 0.7))
    metrics = compute_audit(_records(p_a, gold, la=la, lb=lb), n_boot=100)
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    _report(tmp_path, metrics)
    coverage = next(f for f in figures if "Abstaining" in f.axes[0].get_title())
    lines = {line.get_label(): line.get_ydata() for line in coverage.axes[0].lines}
    for key, label in (("always_longer", "always the longer"), ("always_shorter", "always the shorter"),
                       ("always_first_shown", "always the first shown (A)")):
        value = metrics["baselines"]["rules"][key]["accuracy_no_ties"]["value"]
        drawn = [y for name, y in lines.items() if name.startswith(label + ":")]
        assert len(drawn) == 1 and list(drawn[0]) == pytest.approx([value, value])
    assert metrics["baselines"]["rules"]["always_longer"]["accuracy_no_ties"]["value"] > 0.7  # well above chance here
    assert any(name.startswith("chance") for name in lines)
    for fig in figures:
        close(fig)


# ---------------------------------------------------------------- per-category counts

def test_per_category_rows_show_both_counts(tmp_path):
    """accuracy_no_ties leaves gold ties out: the row gives the items it is taken over beside all the group's items."""
    gold = np.array(["A", "B", "tie", "tie", "A"] * 4 + ["A", "B"] * 5)
    categories = np.array(["chat"] * 20 + ["code"] * 10)
    p_a = np.where(gold == "A", 0.8, 0.2)
    p_a[:5] = [0.3, 0.2, 0.7, 0.4, 0.9]  # chat: one gold-A mistake
    metrics = compute_audit(_records(p_a, gold, categories=categories), n_boot=100)
    chat, code = metrics["by_category"]["chat"], metrics["by_category"]["code"]
    assert (chat["n"], chat["n_non_tie"], code["n"], code["n_non_tie"]) == (20, 12, 10, 10)
    assert chat["accuracy_no_ties"] == pytest.approx(11 / 12, abs=1e-4)
    assert metrics["by_principle"]["helpful"]["n_non_tie"] == 22

    report, saved = _report(tmp_path, metrics)
    assert saved["by_category"]["chat"]["n_non_tie"] == 12
    section = report.split("## By category")[1].split("## By principle")[0]
    assert "| group | items (gold ties included) | gold A/B items (accuracy over these) | accuracy_no_ties" in section
    assert "| chat | 20 | 12 | 0.917 [" in section and "| code | 10 | 10 | " in section


# ---------------------------------------------------------------- ECE beside the base rate, and whether P(A) says anything

def _calibration_case(informative: bool, n: int = 300, seed: int = 5):
    rng = np.random.default_rng(seed)
    gold = np.where(rng.random(n) < 0.6, "A", "B")
    if informative:
        p_a = 1 / (1 + np.exp(-(np.where(gold == "A", 1.2, -1.2) + rng.normal(0, 1, n))))
    else:  # at chance and near 0.5, as the embedded judge on PandaLM: a small ECE, and nothing behind it
        p_a = rng.uniform(0.45, 0.55, n)
    return compute_audit(_records(p_a, gold), n_boot=300)


def test_auc_on_resamples_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from rlaif.audit import information as I

    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.4).astype(float)
    p = np.round(np.clip(0.5 + 0.2 * (y - 0.4) + rng.normal(0, 0.2, 200), 0, 1), 1)  # many tied probabilities
    W = M.resample_weights(200, 5, seed=1)
    got = I.auc(y, p, np.vstack([np.ones(200), W]))
    assert got[0] == pytest.approx(roc_auc_score(y, p))
    assert got[1:] == pytest.approx([roc_auc_score(y, p, sample_weight=w) for w in W])
    assert np.isnan(I.auc(np.ones(5), np.linspace(0, 1, 5), np.ones((1, 5)))[0])  # no gold B: undefined
    assert I.base_rate_scores(y)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_beside_the_base_rate_and_a_judge_without_information(tmp_path):
    metrics = _calibration_case(informative=False)
    cal = metrics["calibration"]
    base = cal["vs_base_rate"]
    assert base["ece"] == 0.0, "the constant base-rate predictor is calibrated by construction"
    b = base["base_rate"]
    assert base["brier"] == pytest.approx(b * (1 - b), abs=1e-4)
    assert cal["ece"]["value"] < 0.12  # a small ECE...
    lo, hi = cal["auc"]["ci95"]
    assert lo < 0.5 < hi  # ...and no ranking of the items
    assert cal["information"]["carries_information"] is False
    assert cal["vs_base_rate"]["judge_brier_minus_base_rate"]["ci95"][1] > 0  # never better than the base rate
    report, saved = _report(tmp_path, metrics)
    assert saved["calibration"]["information"]["carries_information"] is False
    section = report.split("## Calibration of the soft labels")[1].split("## Biases")[0]
    assert "base-rate constant" in section and f"| ece | {cal['ece']['value']:.3f} [" in section
    assert "| 0.000 |" in section.split("| ece |")[1].split("\n")[0]
    assert "The judge's probabilities carry no detectable information on this set" in section


def test_an_informative_judge_is_told_apart_from_the_base_rate(tmp_path):
    metrics = _calibration_case(informative=True)
    cal = metrics["calibration"]
    assert cal["auc"]["ci95"][0] > 0.6 and cal["information"]["carries_information"] is True
    assert cal["vs_base_rate"]["judge_brier_minus_base_rate"]["ci95"][1] < 0
    report, _ = _report(tmp_path, metrics)
    assert "no detectable information" not in report
    assert "The judge's probabilities carry information on this set" in report


# ---------------------------------------------------------------- the length flag and the length-controlled fit

def _length_case(n: int = 600, seed: int = 8):
    """Humans prefer the longer response 80% of the time; the judge agrees with them 65% of the time where they
    preferred the longer response and 40% where they preferred the shorter (it flips towards the longer one)."""
    rng = np.random.default_rng(seed)
    la, lb = rng.integers(50, 1500, n), rng.integers(50, 1500, n)
    lb = np.where(la == lb, lb + 1, lb)
    longer = np.where(la > lb, "A", "B")
    shorter = np.where(la > lb, "B", "A")
    gold_longer = rng.random(n) < 0.8
    gold = np.where(gold_longer, longer, shorter)
    keep = rng.random(n) < np.where(gold_longer, 0.65, 0.4)
    judge = np.where(keep, gold, np.where(gold == "A", "B", "A"))
    p_a = np.where(judge == "A", 0.7, 0.3)
    return compute_audit(_records(p_a, gold, la=la, lb=lb), n_boot=200)


def test_report_explains_the_length_flag_beside_the_length_controlled_fit(tmp_path):
    metrics = _length_case()
    flag = metrics["biases"]["flags"]["length_bias"]
    coef = metrics["baselines"]["length_controlled"]["coefficients"]
    assert flag["flagged"] and flag["value"] < -0.1  # the judge picks the longer response less often than the humans...
    assert coef["longer_side"] > 0 and coef["longer_side"] + coef["length_difference"] > 0  # ...yet leans to it given the label
    report, _ = _report(tmp_path, metrics)
    biases = report.split("## Biases")[1].split("## By category")[0]
    assert ("The length flag compares how often the judge and the humans pick the longer response; the "
            "length-controlled fit measures the judge's lean to the longer response given the human label") in biases
    assert "Here they point opposite ways" in biases
    assert f"b_s = {coef['longer_side']:.3f}" in biases

    same_way = _length_case(seed=9)
    same_way["baselines"]["length_controlled"]["coefficients"]["longer_side"] = -0.5  # a fit that agrees with the flag
    same_way["baselines"]["length_controlled"]["coefficients"]["length_difference"] = -0.5
    report, _ = _report(tmp_path, same_way)
    biases = report.split("## Biases")[1].split("## By category")[0]
    assert "The length flag compares" in biases and "Here they point opposite ways" not in biases
