"""Listwise ranking: the Bradley-Terry fit, ties and unlabeled comparisons, emission modes, the stage, resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fakes import MARKER, fake, judge_config, shown, verdict

from rlaif.backends import Completion, SharedBackend
from rlaif.records import Judgment, PrincipleVerdict
from rlaif.stages.bradley_terry import comparison_matrix, components, fit_bradley_terry
from rlaif.stages.label import JUDGMENTS
from rlaif.stages.rank import (
    CandidateInput,
    CandidateSet,
    candidate_pairs,
    emit_rows,
    group_candidates,
    rank_set,
    rank_stage,
)
from rlaif.store.runfolder import RunFolder, read_rows

TRUE = np.array([0.25, 4.0, 1.0, 0.5, 2.0])  # candidate 1 strongest, then 4, 2, 3, 0


def sampled_wins(strengths, games=200, seed=0):
    rng, k = np.random.default_rng(seed), len(strengths)
    wins = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            won = rng.binomial(games, strengths[i] / (strengths[i] + strengths[j]))
            wins[i, j], wins[j, i] = won, games - won
    return wins


def test_bt_recovers_known_strengths_from_sampled_games():
    fit = fit_bradley_terry(sampled_wins(TRUE), prior=1.0)
    pi = np.array(fit.strengths)
    assert fit.converged and list(np.argsort(-pi)) == [1, 4, 2, 3, 0]
    ratios = pi / pi[2]  # compare shape, not scale: the true strengths relative to candidate 2
    assert np.allclose(np.log(ratios), np.log(TRUE / TRUE[2]), atol=0.25)
    inverted = fit_bradley_terry(sampled_wins(TRUE).T, prior=1.0)
    assert list(np.argsort(-np.array(inverted.strengths))) == [0, 3, 2, 4, 1], "inverted wins must invert the order"


def test_bt_on_soft_probabilities_is_exact_without_prior():
    k = len(TRUE)
    wins = np.array([[TRUE[i] / (TRUE[i] + TRUE[j]) if i != j else 0.0 for j in range(k)] for i in range(k)])
    pi = np.array(fit_bradley_terry(wins, prior=0.0).strengths)
    assert np.allclose(pi / pi[2], TRUE / TRUE[2], rtol=1e-6)


def test_undefeated_and_winless_candidates_stay_finite_with_a_prior():
    wins = np.zeros((3, 3))
    wins[0, 1] = wins[0, 2] = wins[1, 2] = 1.0  # a perfect order: 0 > 1 > 2
    fit = fit_bradley_terry(wins, prior=1.0)
    assert fit.converged and all(0 < s < math.inf for s in fit.strengths)
    assert fit.strengths[0] > fit.strengths[1] > fit.strengths[2]
    with pytest.raises(ValueError, match="prior"):
        fit_bradley_terry(wins, prior=0.0)


def judgment(p_first=None, reason=None, per_principle_p=(None,), errors=(None,)) -> Judgment:
    pvs = [PrincipleVerdict(principle_id=f"p{i}", orders=[], p_first=p, error=e)
           for i, (p, e) in enumerate(zip(per_principle_p, errors))]
    return Judgment(key="k", pair_id="x", pair_key="pk", judge="j", model="m", backend="fake", template="t",
                    template_version="v", constitution_version="c", principle_ids=[pv.principle_id for pv in pvs],
                    per_principle=pvs, p_first=p_first, reason=reason)


def test_ties_and_unlabeled_comparisons_are_told_apart_and_counted():
    assert judgment(p_first=0.7, per_principle_p=(0.7,)).outcome == 0.7
    tie = judgment(reason="tie: the judge gave both responses exactly equal probability", per_principle_p=(0.6, 0.4), errors=(None, None))
    assert tie.outcome == 0.5
    assert judgment(reason="helpfulness: prompt too long", errors=("prompt too long",)).outcome is None
    wins, used = comparison_matrix(3, [(0, 1, 0.8), (0, 2, 0.5), (1, 2, None)])
    assert used == {"used": 2, "ties": 1, "unlabeled": 1}
    assert wins[0, 1] == pytest.approx(0.8) and wins[1, 0] == pytest.approx(0.2) and wins[0, 2] == wins[2, 0] == 0.5
    assert wins[1, 2] == wins[2, 1] == 0


def test_disconnected_comparison_graph_is_reported():
    wins, _ = comparison_matrix(4, [(0, 1, 0.9), (2, 3, 0.2), (0, 2, None), (1, 3, None)])
    assert components(wins) == [[0, 1], [2, 3]]
    cset = CandidateSet(id="s", prompt="Q?", candidate_ids=["a", "b", "c", "d"], responses=["A", "B", "C", "D"])
    by_pair = {(0, 1): judgment(p_first=0.9, per_principle_p=(0.9,)), (2, 3): judgment(p_first=0.2, per_principle_p=(0.2,))}
    judgments = [by_pair.get(tuple(p.source["candidates"]), judgment(reason="x: order 12: busy", errors=("busy",)))
                 for p in candidate_pairs(cset)]
    ranking = rank_set(cset, judgments)
    assert not ranking.connected and ranking.components == [["a", "b"], ["c", "d"]]
    assert ranking.unlabeled == 4 and ranking.comparisons_used == 2 and ranking.unlabeled_reasons == {"busy": 4}


def ranked(outcomes: dict[tuple[int, int], float | None], k: int):
    cset = CandidateSet(id="s", prompt="Q?", candidate_ids=[f"c{i}" for i in range(k)], responses=[f"R{i}" for i in range(k)])
    judgments = []
    for pair in candidate_pairs(cset):
        p = outcomes[tuple(pair.source["candidates"])]
        judgments.append(judgment(p_first=p, per_principle_p=(p,)) if p not in (None, 0.5)
                         else judgment(reason="tie: the judge gave both responses exactly equal probability", per_principle_p=(0.5,)) if p == 0.5
                         else judgment(reason="x: unreadable", errors=("unreadable",)))
    ranking = rank_set(cset, judgments)
    direct = {tuple(p.source["candidates"]): j for p, j in zip(candidate_pairs(cset), judgments)}
    return ranking, direct


def test_emission_modes_give_the_right_number_of_rows():
    # 0 > 1 > 2 > 3, every comparison decided
    ranking, direct = ranked({(0, 1): 0.8, (0, 2): 0.9, (0, 3): 0.9, (1, 2): 0.7, (1, 3): 0.8, (2, 3): 0.6}, 4)
    assert [c.id for c in ranking.candidates] == ["c0", "c1", "c2", "c3"]
    assert [c.wins for c in ranking.candidates] == [3, 2, 1, 0] and ranking.candidates[0].soft_wins == pytest.approx(2.6)
    counts = {mode: len(emit_rows(ranking, mode, direct)[0]) for mode in ("all", "best_worst", "adjacent")}
    assert counts == {"all": 6, "best_worst": 1, "adjacent": 3}
    rows, _ = emit_rows(ranking, "all", direct)
    for row in rows:
        provenance = json.loads(row["provenance"])
        assert row["chosen_score"] > row["rejected_score"] and row["probability"] > 0.5
        assert provenance["comparisons_used"] == 6 and len(provenance["bt_strengths"]) == 4
        assert row["comparisons"] == 6 and row["source"] == "ranking"
    best = next(r for r in rows if r["chosen_id"] == "c0" and r["rejected_id"] == "c3")
    assert best["chosen"][0]["content"] == "R0" and json.loads(best["provenance"])["direct_p_chosen"] == pytest.approx(0.9)
    reverse = next(r for r in rows if r["chosen_id"] == "c2" and r["rejected_id"] == "c3")
    assert json.loads(reverse["provenance"])["direct_p_chosen"] == pytest.approx(0.6)


def test_equal_strengths_give_no_row():
    # 1 and 2 are interchangeable: same results against 0 and 3, and a tie between them
    ranking, direct = ranked({(0, 1): 0.7, (0, 2): 0.7, (0, 3): 0.9, (1, 2): 0.5, (1, 3): 0.8, (2, 3): 0.8}, 4)
    assert ranking.ties == 1 and ranking.comparisons_used == 6
    s = {c.id: c.strength for c in ranking.candidates}
    assert s["c1"] == pytest.approx(s["c2"], rel=1e-9) and s["c0"] > s["c1"] > s["c3"]
    rows, ties = emit_rows(ranking, "all", direct)
    assert len(rows) == 5 and ties == 1 and {r["chosen_id"] for r in rows} == {"c0", "c1", "c2"}
    assert not any({r["chosen_id"], r["rejected_id"]} == {"c1", "c2"} for r in rows)
    assert len(emit_rows(ranking, "adjacent", direct)[0]) == 2


def test_group_candidates_from_sets_and_samples(tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [
        {"id": "set1", "prompt": "Q1?", "responses": ["a", "b", "a", "  ", "c"]},
        {"prompt_id": "p2", "prompt": "Q2?", "index": 0, "response": "x", "model": "m"},
        {"prompt_id": "p2", "prompt": "Q2?", "index": 1, "response": "y", "model": "m"},
        {"id": "set3", "prompt": "Q3?", "responses": ["only"]},
        {"id": "bad", "prompt": "Q?", "responses": []},
        {"prompt_id": "p2", "prompt": "Q2?", "index": 1, "response": "z", "model": "m"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    inputs, errors = read_rows(path, CandidateInput)
    assert [e.line for e in errors] == [5, 6] and "duplicate id" in errors[1].error
    sets, skipped = group_candidates(inputs)
    assert [(s.id, s.responses) for s in sets] == [("set1", ["a", "b", "c"]), ("p2", ["x", "y"])]
    assert sets[0].candidate_ids == ["set1:0", "set1:1", "set1:4"]
    reasons = sorted(s["reason"] for s in skipped)
    assert reasons == ["1 distinct candidate(s); a ranking needs 2", "empty response", "identical to candidate set1:0"]


def stars_judge(request):
    """Prefers the shown response with more '*'; equal counts -> exactly 0.5 (a tie)."""
    a, b = shown(request)
    diff = a.count("*") - b.count("*")
    return verdict(1 / (1 + math.exp(-diff)))


def test_rank_stage_orders_candidates_writes_outputs_and_resumes(tmp_path):
    from datasets import load_from_disk

    sets = [CandidateSet(id="s1", prompt="Q1?", candidate_ids=["s1:0", "s1:1", "s1:2"], responses=["*", "***", "**"]),
            CandidateSet(id="s2", prompt="Q2?", candidate_ids=list("abcd"), responses=["x", "x**", "y**", "z****"])]
    backend = fake(stars_judge)
    summary = rank_stage(sets, [], [], judge_config(), SharedBackend(backend), RunFolder(tmp_path), batch_size=2, emit="all", progress=False)
    assert len(backend.requests) == 2 * (3 + 6)
    assert summary["comparisons"] == 9 and summary["ties"] == 1 and summary["preference_rows"] == 3 + 5
    rankings = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    assert [c["id"] for c in rankings[0]["candidates"]] == ["s1:1", "s1:2", "s1:0"]
    assert [c["id"] for c in rankings[1]["candidates"]][0] == "d" and rankings[1]["candidates"][-1]["id"] == "a"
    assert rankings[1]["ties"] == 1 and rankings[1]["connected"]
    ds = load_from_disk(str(tmp_path / "dataset"))
    assert len(ds) == 8 and all(r["chosen"][0]["content"].count("*") > r["rejected"][0]["content"].count("*") for r in ds)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["counts"]["preference_rows"] == 8 and manifest["bradley_terry"]["prior_virtual_games"] == 1.0
    again = fake(stars_judge)
    summary2 = rank_stage(sets, [], [], judge_config(), SharedBackend(again), RunFolder(tmp_path), emit="best_worst", progress=False)
    # every comparison is final, the tie (x** vs y**) included: nothing is judged again, nothing is appended
    assert len(again.requests) == 0 and summary2["judged_now"] == 0 and summary2["reused_from_earlier_runs"] == 9
    assert summary2["preference_rows"] == 2 and summary2["ties"] == 1
    assert len((tmp_path / JUDGMENTS).read_text().splitlines()) == 9


def test_rank_stage_counts_unlabeled_comparisons(tmp_path):
    def busy_for_b(request):
        a, b = shown(request)
        return Completion(error="server busy") if "B!" in (a, b) else stars_judge(request)

    sets = [CandidateSet(id="s", prompt="Q?", candidate_ids=list("abc"), responses=["A*", "B!", "C***"])]
    summary = rank_stage(sets, [], [], judge_config(), SharedBackend(fake(busy_for_b)), RunFolder(tmp_path), emit="all", progress=False)
    assert summary["unlabeled"] == 2 and summary["comparisons_used"] == 1 and summary["disconnected_prompts"] == 1
    [ranking] = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    assert ranking["components"] == [["a", "c"], ["b"]] and not ranking["connected"]


@pytest.mark.vllm
def test_real_model_ranks_three_candidates_with_three_comparisons(counting, judge_config, tmp_path):
    sets = [CandidateSet(id="capital", prompt="What is the capital of France?", candidate_ids=["good", "wrong", "off"],
                         responses=["The capital of France is Paris.", "The capital of France is Berlin.", "Potatoes."])]
    summary = rank_stage(sets, [], [], judge_config, SharedBackend(counting), RunFolder(tmp_path), emit="all", progress=False)
    assert summary["comparisons"] == 3 and counting.requests == 6, "3 pairs, each in both orders"
    assert summary["comparisons_used"] + summary["unlabeled"] == 3
    [ranking] = [json.loads(line) for line in (tmp_path / "rankings.jsonl").read_text().splitlines()]
    assert sorted(c["id"] for c in ranking["candidates"]) == ["good", "off", "wrong"]
    strengths = [c["strength"] for c in ranking["candidates"]]
    assert strengths == sorted(strengths, reverse=True) and all(s > 0 for s in strengths)
    assert summary["preference_rows"] + summary["equal_strength_pairs"] == 3


@pytest.mark.vllm
def test_cli_rank_real_model_writes_rankings_and_dataset(vllm_backend, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    rows = [{"id": "sea", "prompt": "Describe the sea in one sentence.",
             "responses": ["The sea is a vast body of salt water.", "Blue.", "I like trains."]},
            {"id": "other", "prompt": "Name a colour.", "responses": ["Red.", "Seven."]}]
    path = tmp_path / "candidates.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "run"
    assert cli.main(["rank", "--candidates", str(path), "--out", str(out), "--emit", "adjacent", "--limit", "1", "--quiet"]) == 0
    assert "rlaif rank summary" in capsys.readouterr().out
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["prompts"] == 1 and counts["comparisons"] == 3
    [ranking] = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    assert ranking["set_id"] == "sea" and len(ranking["candidates"]) == 3
    ds = load_from_disk(str(out / "dataset"))
    assert len(ds) + counts["equal_strength_pairs"] == 2, "adjacent: K - 1 rows unless strengths are equal"
    for row in ds:
        assert row["probability"] > 0.5 and row["chosen_score"] > row["rejected_score"]


def test_a_self_consistency_tie_is_half_a_win_in_the_ranking():
    """Regression: `rlaif rank` read ties from the per-principle mean, so a tie of split self-consistency samples
    (votes 1 and 0, mean probability 0.6) was counted as unlabeled with no half-win. One tie now: Judgment.outcome."""
    import re

    from fakes import pair as make_pair
    from test_reasoning import reasoning_config, shown, text

    from rlaif.judging import PairwiseJudge

    seen: dict = {}

    def handler(request):
        if request.continue_final:  # sample 0 prefers response 1 (0.9), sample 1 prefers response 2 (P(1) = 0.3)
            sample = int(re.search(r"#(\d)", request.messages[-1].content).group(1))
            first_shown_is_1 = MARKER in shown(request)[0]  # response 1 of pair(1) carries the marker
            p_1 = 0.9 if sample == 0 else 0.3
            return verdict(p_1 if first_shown_is_1 else 1.0 - p_1)
        k = seen[shown(request)] = seen.get(shown(request), -1) + 1
        return text(f"#{k}")

    p = make_pair(1)
    cset = CandidateSet(id="s", prompt=p.prompt, candidate_ids=["good", "vague"], responses=[p.response_1, p.response_2])
    judge = PairwiseJudge(reasoning_config(samples=2, temperature=0.8, aggregate="majority"), fake(handler))
    [j] = judge.judge(candidate_pairs(cset))
    assert j.tie and j.vote_share == 0.5 and j.per_principle[0].p_first == pytest.approx(0.6)
    ranking = rank_set(cset, [j])
    assert (ranking.ties, ranking.unlabeled, ranking.comparisons_used) == (1, 0, 1)
    assert [(c.ties, c.soft_wins) for c in ranking.candidates] == [(1, 0.5), (1, 0.5)]
