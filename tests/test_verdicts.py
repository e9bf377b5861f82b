"""Verdict probabilities from first-token logprobs, calibration and order combination, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from rlaif.judging.verdicts import calibrate, combine_orders, read_verdict

LABELS = {"A": ["A"], "B": ["B"]}
ln = math.log


def test_normalises_over_the_two_labels():
    # P(A)=0.3, P(B)=0.1 -> P(A | A or B) = 0.3 / 0.4 = 0.75; mass 0.4
    reading = read_verdict({"A": ln(0.3), "B": ln(0.1), "The": ln(0.5)}, LABELS)
    assert reading.p_a == pytest.approx(0.75) and reading.mass == pytest.approx(0.4) and reading.reason is None
    assert tuple(reading) == (reading.p_a, reading.mass, None)


def test_leading_space_variants_are_summed():
    # A = 0.30 + 0.20 = 0.5, B = 0.25 + 0.05 = 0.3 -> p_a = 0.5 / 0.8 = 0.625; mass 0.8
    top = {"A": ln(0.30), " A": ln(0.20), "B": ln(0.25), " B": ln(0.05), "C": ln(0.2)}
    reading = read_verdict(top, LABELS)
    assert reading.p_a == pytest.approx(0.625) and reading.mass == pytest.approx(0.8)


def test_lowercase_or_other_tokens_are_not_verdicts():
    # "a" and "Answer" are not label tokens: only A=0.2 and B=0.6 count -> 0.25
    reading = read_verdict({"a": ln(0.1), "Answer": ln(0.1), "A": ln(0.2), "B": ln(0.6)}, LABELS)
    assert reading.p_a == pytest.approx(0.25) and reading.mass == pytest.approx(0.8)


def test_configured_label_variants():
    labels = {"A": ["A", "1"], "B": ["B", "2"]}
    # A = 0.1 + 0.3 = 0.4, B = 0.2 + 0.2 = 0.4 -> 0.5
    reading = read_verdict({"A": ln(0.1), "1": ln(0.3), "B": ln(0.2), " 2": ln(0.2)}, labels)
    assert reading.p_a == pytest.approx(0.5) and reading.mass == pytest.approx(0.8)


def test_only_a_present_uses_kth_probability_as_bound_for_b():
    # top-3: A 0.6, x 0.3, y 0.1; B is not in the top-k so P(B) <= 0.1 (the smallest shown)
    # -> p_a = 0.6 / (0.6 + 0.1) = 6/7, below the 1.0 a naive reading would give
    reading = read_verdict({"A": ln(0.6), "x": ln(0.3), "y": ln(0.1)}, LABELS)
    assert reading.p_a == pytest.approx(6 / 7) and reading.mass == pytest.approx(0.7)
    assert 0.5 < reading.p_a < 1.0


def test_only_b_present_moves_toward_half_from_below():
    # B 0.7, x 0.2, y 0.05 -> P(A) <= 0.05 -> p_a = 0.05 / 0.75 = 1/15
    reading = read_verdict({"B": ln(0.7), "x": ln(0.2), "y": ln(0.05)}, LABELS)
    assert reading.p_a == pytest.approx(1 / 15) and reading.mass == pytest.approx(0.75)
    assert 0.0 < reading.p_a < 0.5


def test_single_label_that_is_itself_the_smallest_gives_half():
    # A is the k-th token: the bound for B equals P(A), the reading cannot lean either way
    reading = read_verdict({"Sure": ln(0.8), "A": ln(0.1)}, LABELS)
    assert reading.p_a == pytest.approx(0.5) and reading.mass == pytest.approx(0.2)


def test_no_verdict_token_gives_no_label_and_names_top_tokens():
    reading = read_verdict({"Sure": ln(0.7), "I": ln(0.2), "Well": ln(0.05), "The": ln(0.01)}, LABELS)
    assert reading.p_a is None and reading.mass == 0.0
    assert "no verdict token" in reading.reason and "top 4 logprobs" in reading.reason
    assert "'Sure' 0.70" in reading.reason and "'I' 0.20" in reading.reason and "'Well' 0.05" in reading.reason
    assert "'The'" not in reading.reason  # only the top 3 are shown
    assert reading.reason.index("'Sure'") < reading.reason.index("'I'")


def test_empty_logprobs_gives_reason():
    reading = read_verdict({}, LABELS)
    assert reading.p_a is None and reading.mass == 0.0 and "no logprobs" in reading.reason


# --- calibration -------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.73, 1.0])
def test_temperature_one_is_identity(p):
    assert calibrate(p, 1.0) == p


def test_temperature_above_one_softens():
    # logit(0.8) = ln 4; / 2 -> ln 2 -> 2/3
    assert calibrate(0.8, 2.0) == pytest.approx(2 / 3)
    assert calibrate(0.2, 2.0) == pytest.approx(1 / 3)
    assert calibrate(0.5, 3.0) == pytest.approx(0.5)


def test_temperature_below_one_sharpens():
    # logit(0.8) = ln 4; / 0.5 -> ln 16 -> 16/17
    assert calibrate(0.8, 0.5) == pytest.approx(16 / 17)
    assert calibrate(0.2, 0.5) == pytest.approx(1 / 17)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.62, 0.9])
@pytest.mark.parametrize("t", [0.4, 1.7, 5.0])
def test_calibration_is_symmetric_and_monotone_in_temperature(p, t):
    assert calibrate(1 - p, t) == pytest.approx(1 - calibrate(p, t))
    distance = abs(calibrate(p, t) - 0.5)
    assert (distance < abs(p - 0.5)) if t > 1 else (distance > abs(p - 0.5))


def test_calibration_of_certainty_stays_finite():
    assert 0.5 < calibrate(1.0, 2.0) < 1.0 and 0.0 < calibrate(0.0, 2.0) < 0.5


# --- combining orders --------------------------------------------------------------------------------

def test_combine_agreeing_orders():
    p, agree = combine_orders(0.8, 0.6)
    assert p == pytest.approx(0.7) and agree is True
    p, agree = combine_orders(0.1, 0.3)
    assert p == pytest.approx(0.2) and agree is True


def test_combine_disagreeing_orders():
    p, agree = combine_orders(0.8, 0.4)
    assert p == pytest.approx(0.6) and agree is False
    p, agree = combine_orders(0.9, 0.1)  # pure position bias
    assert p == pytest.approx(0.5) and agree is False


def test_an_exact_half_is_not_agreement():
    assert combine_orders(0.5, 0.9)[1] is False and combine_orders(0.5, 0.5)[1] is False


def test_single_order_has_unknown_agreement():
    assert combine_orders(0.7, None) == (0.7, None)


@pytest.mark.parametrize("labels, expected", [
    ({"A": ["A"]}, "exactly the keys A and B"),
    ({"A": ["A"], "B": []}, "at least one token"),
    ({"A": ["A", "1"], "B": ["B", " 1"]}, "both A and B"),
])
def test_verdict_labels_must_be_a_and_b_with_distinct_tokens(labels, expected):
    from pydantic import ValidationError

    from rlaif.config.judge import VerdictConfig

    with pytest.raises(ValidationError, match=expected):
        VerdictConfig(labels=labels)
