"""PairwiseJudge over a fake backend: order swapping, combination, unlabeled reasons, principles, keys."""

from __future__ import annotations

import math

import pytest
from fakes import MARKER, always_a, fake, judge_config, pair, prefers_marker, shown, system_text, verdict

from rlaif.backends import Choice, Completion
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.judging.prompting import load_constitution


def make(handler, **config):
    backend = fake(handler)
    return PairwiseJudge(judge_config(**config), backend), backend


def test_both_orders_requested_and_second_really_swaps():
    judge, backend = make(prefers_marker())
    p = pair(1)
    judge.judge([p])
    assert len(backend.requests) == 2
    first, second = backend.requests
    assert shown(first) == (p.response_1, p.response_2)
    assert shown(second) == (p.response_2, p.response_1)
    constitution = load_constitution("constitution/default.yaml")
    helpfulness = constitution.get(["helpfulness"])[0]
    for request in backend.requests:
        assert request.messages[0].role == "system" and helpfulness.text in system_text(request)
        assert p.prompt in request.messages[1].content
        assert request.max_tokens == 1 and request.temperature == 0.0 and request.top_logprobs == 20


def test_pure_position_bias_gives_half_and_disagreement():
    judge, _ = make(always_a(0.8))
    j = judge.judge([pair(1)])[0]
    pv = j.per_principle[0]
    assert [o.p_first for o in pv.orders] == pytest.approx([0.8, 0.2])
    assert pv.p_first == pytest.approx(0.5) and pv.orders_agree is False and j.orders_agree is False
    assert not j.labeled and j.p_first is None and j.reason.startswith("tie")


def test_position_bias_plus_preference_averages_and_disagrees():
    # leans A always (0.6) but 0.9 when the marker is shown as A: order 12 -> 0.9, order 21 -> 1 - 0.6 = 0.4
    handler = lambda r: verdict(0.9 if MARKER in shown(r)[0] else 0.6)  # noqa: E731
    judge, _ = make(handler)
    j = judge.judge([pair(1, marker_first=True)])[0]
    assert j.labeled and j.p_first == pytest.approx(0.65) and j.orders_agree is False


@pytest.mark.parametrize("marker_first", [True, False])
def test_consistent_preference_in_both_orders(marker_first):
    judge, _ = make(prefers_marker(0.9))
    p = pair(3, marker_first=marker_first)
    j = judge.judge([p])[0]
    assert j.labeled and j.orders_agree is True and j.reason is None
    assert j.p_first == pytest.approx(0.9 if marker_first else 0.1)
    assert [o.order for o in j.per_principle[0].orders] == ["12", "21"]
    assert j.pair_id == p.id and j.pair_key == p.key and j.principle_ids == ["helpfulness"]
    assert j.model == "fake-judge" and j.backend == "fake" and j.template_version == "pairwise-2026.11-1"
    assert j.prompt_tokens == 200 and j.completion_tokens == 2 and j.cost_usd == pytest.approx(0.002)


def test_single_order_when_both_orders_off():
    judge = PairwiseJudge(judge_config().model_copy(update={"both_orders": False}), fake(prefers_marker(0.8)))
    j = judge.judge([pair(1)])[0]
    assert len(judge.backend.requests) == 1 and j.p_first == pytest.approx(0.8) and j.orders_agree is None


def test_calibration_temperature_is_applied():
    judge, _ = make(prefers_marker(0.8), temperature=2.0)  # 0.8 -> 2/3 in both orders
    assert judge.judge([pair(1)])[0].p_first == pytest.approx(2 / 3)


def _no_logprobs(request):
    return Completion(choices=[Choice(text="A", logprobs=[], tokens=1)])


def _chatty(request):
    return Completion(choices=[Choice(text="Sure", logprobs=[{"Sure": math.log(0.7), "I": math.log(0.2)}], tokens=1)])


def _low_mass(request):  # A 0.2 + B 0.1 = 0.3 of the probability
    return Completion(choices=[Choice(text="The", logprobs=[{"The": math.log(0.6), "A": math.log(0.2), "B": math.log(0.1)}])])


def _error_in_swapped_order(request):
    a, _ = shown(request)
    return verdict(0.9) if "vague" not in a else Completion(error="prompt too long: 3000 tokens > 2048")


@pytest.mark.parametrize("handler, config, expected", [
    (lambda r: Completion(error="server unreachable"), {}, "order 12: server unreachable"),
    (_no_logprobs, {}, "no logprobs"),
    (lambda r: Completion(choices=[]), {}, "no logprobs"),
    (_chatty, {}, "no verdict token"),
    (_low_mass, {"min_verdict_mass": 0.5}, "0.300 of the probability, below min_verdict_mass 0.5"),
    (_error_in_swapped_order, {}, "order 21: prompt too long"),
])
def test_unreadable_verdicts_are_unlabeled_with_reason(handler, config, expected):
    judge, _ = make(handler, **config)
    j = judge.judge([pair(1)])[0]
    assert j.p_first is None and not j.labeled
    assert expected in j.reason and j.reason.startswith("helpfulness: ")


def test_min_verdict_mass_met_is_labeled():
    judge, _ = make(_low_mass, min_verdict_mass=0.25)
    j = judge.judge([pair(1)])[0]
    # both orders read p_a = 2/3: order 12 -> 2/3, order 21 -> 1/3 -> tie
    assert j.per_principle[0].orders[0].verdict_mass == pytest.approx(0.3)
    assert j.per_principle[0].p_first == pytest.approx(0.5) and j.reason.startswith("tie")


def test_exact_tie_is_unlabeled():
    judge, _ = make(lambda r: verdict(0.5))
    j = judge.judge([pair(1)])[0]
    assert j.p_first is None and not j.labeled and "tie" in j.reason


def test_one_bad_pair_does_not_spoil_the_batch():
    handler = lambda r: Completion(error="boom") if "Question number 2" in r.messages[1].content else prefers_marker()(r)  # noqa: E731
    judge, _ = make(handler)
    judged = judge.judge([pair(1), pair(2), pair(3, marker_first=False)])
    assert [j.labeled for j in judged] == [True, False, True]
    assert [j.pair_id for j in judged] == ["pair-1", "pair-2", "pair-3"]
    assert judged[2].p_first == pytest.approx(0.1)


def test_mode_all_averages_over_every_principle():
    constitution = load_constitution("constitution/default.yaml")
    # only the Helpfulness principle sees a difference (0.9 toward the marker); every other one is 0.5
    handler = lambda r: prefers_marker(0.9)(r) if "(Helpfulness)" in system_text(r) else verdict(0.5)  # noqa: E731
    judge, backend = make(handler, mode="all")
    j = judge.judge([pair(1)])[0]
    n = len(constitution.principles)
    assert len(backend.requests) == 2 * n
    assert j.principle_ids == [p.id for p in constitution.principles] and len(j.per_principle) == n
    assert j.p_first == pytest.approx((0.9 + 0.5 * (n - 1)) / n) and j.labeled


def test_sample_mode_draws_k_principles_per_pair():
    judge, backend = make(prefers_marker(), mode="sample", k=2)
    j = judge.judge([pair(1)])[0]
    assert len(j.principle_ids) == 2 and len(set(j.principle_ids)) == 2 and len(backend.requests) == 4
    assert judge.judge([pair(1)])[0].principle_ids == j.principle_ids


def test_judgment_key_depends_on_texts_and_judge_config():
    a, _ = make(prefers_marker())
    same, _ = make(prefers_marker())
    hotter, _ = make(prefers_marker(), temperature=2.0)
    other_principle, _ = make(prefers_marker(), ids=("honesty",))
    p = pair(1)
    renamed = p.model_copy(update={"id": "another-id"})
    assert a.key(p) == same.key(p) == a.key(renamed)
    assert len({a.key(p), hotter.key(p), other_principle.key(p), a.key(pair(2))}) == 4
    assert a.judge([p])[0].key == a.key(p)


def test_pairs_sharing_an_id_are_judged_separately():
    judge, _ = make(prefers_marker(0.9))
    first, second = pair(1, marker_first=True), pair(2, marker_first=False).model_copy(update={"id": "pair-1"})
    judged = judge.judge([first, second])
    assert [j.p_first for j in judged] == pytest.approx([0.9, 0.1])
