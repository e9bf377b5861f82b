"""Judge ensembles over fake backends (aggregation, member failure, loading, validation, resume), and the
shipped ensemble through `rlaif label` on the real embedded model (marked `vllm`)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from fakes import MARKER, fake, judge_config, pair, shown, verdict

from rlaif.backends import BackendStats, Completion
from rlaif.config import EnsembleConfig, EnsembleJudgeConfig, load_judge_config, load_judge_spec
from rlaif.errors import ConfigError
from rlaif.judging import EnsembleJudge, PairwiseJudge, make_judge


def member(name: str, p_marker: float | None):
    """A single judge giving p_marker to the response with MARKER in both orders (None: every request fails)."""

    def handler(request):
        if p_marker is None:
            return Completion(error=f"{name} is down")
        return verdict(p_marker if MARKER in shown(request)[0] else 1.0 - p_marker)

    return PairwiseJudge(judge_config().model_copy(update={"name": name}), fake(handler))


def ensemble(members, aggregate="mean") -> EnsembleJudge:
    config = EnsembleJudgeConfig(name="test-ensemble", ensemble=EnsembleConfig(members=[m.config.name for m in members],
                                                                               aggregate=aggregate))
    return EnsembleJudge(config, members)


@pytest.mark.parametrize("aggregate, expected", [("mean", (0.9 + 0.4 + 0.8) / 3), ("majority", 2 / 3)])
def test_members_aggregated_with_spread(aggregate, expected):
    judge = ensemble([member("m1", 0.9), member("m2", 0.4), member("m3", 0.8)], aggregate)
    j = judge.judge([pair(1)])[0]
    assert j.labeled and j.p_first == pytest.approx(expected) and j.judge == "test-ensemble"
    assert j.component_p == pytest.approx([0.9, 0.4, 0.8]) and [m.judge for m in j.members] == ["m1", "m2", "m3"]
    mean = (0.9 + 0.4 + 0.8) / 3
    assert j.spread == pytest.approx(math.sqrt(sum((p - mean) ** 2 for p in (0.9, 0.4, 0.8)) / 3))
    assert j.vote_share == pytest.approx(2 / 3) and j.failed_members == []
    assert j.prompt_tokens == 3 * 200 and j.cost_usd == pytest.approx(3 * 0.002)
    # each member judged the batch once on its own backend
    assert [len(m.backend.requests) for m in judge.members] == [2, 2, 2]


def test_failed_member_is_listed_and_the_rest_label():
    j = ensemble([member("m1", 0.9), member("down", None)]).judge([pair(1), pair(2, marker_first=False)])
    assert [x.p_first for x in j] == [pytest.approx(0.9), pytest.approx(0.1)]
    assert all(x.failed_members == ["down"] and x.component_p[1] is None for x in j)
    assert "down is down" in j[0].members[1].reason


def test_all_members_failing_is_unlabeled_with_each_reason():
    j = ensemble([member("a", None), member("b", None)]).judge([pair(1)])[0]
    assert not j.labeled and j.reason.startswith("all 2 members failed") and "a: " in j.reason and "b: " in j.reason
    assert j.failed_members == ["a", "b"]


def test_a_member_tie_counts_as_half_not_as_a_failure():
    tie = PairwiseJudge(judge_config().model_copy(update={"name": "tie"}), fake(lambda r: verdict(0.7)))  # position bias
    j = ensemble([member("m1", 0.9), tie]).judge([pair(1)])[0]
    assert j.members[1].reason.startswith("tie") and j.failed_members == []
    assert j.p_first == pytest.approx((0.9 + 0.5) / 2)
    assert ensemble([member("m1", 0.9), tie], "majority").judge([pair(1)])[0].vote_share == pytest.approx(0.75)


def test_majority_split_evenly_is_a_tie():
    j = ensemble([member("m1", 0.9), member("m2", 0.2)], "majority").judge([pair(1)])[0]
    assert not j.labeled and j.reason.startswith("tie") and j.vote_share == 0.5


def test_ensemble_key_depends_on_its_members():
    a = ensemble([member("m1", 0.9), member("m2", 0.4)])
    b = ensemble([member("m1", 0.9), member("m2", 0.4)])
    c = ensemble([member("m1", 0.9), member("m3", 0.4)])
    assert a.key(pair(1)) == b.key(pair(1)) != c.key(pair(1)) and a.key(pair(1)) != a.members[0].key(pair(1))


class FakePool:
    """Stands in for BackendPool: one fake backend per backend config asked for."""

    def __init__(self, handler):
        self.handler, self.asked, self.opened = handler, [], []

    def get(self, config):
        self.asked.append(config)
        self.opened.append(fake(self.handler))
        return self.opened[-1]

    def stats(self):
        return sum((b.stats() for b in self.opened), BackendStats())


def test_make_judge_builds_the_shipped_ensemble_with_a_backend_per_member():
    pool = FakePool(lambda r: verdict(0.6))
    judge = make_judge("smollm2-ensemble", pool)
    assert isinstance(judge, EnsembleJudge) and judge.config.name == "smollm2-ensemble"
    assert [m.config.name for m in judge.members] == ["smollm2-pairwise", "smollm2-pairwise-reasoning"]
    assert judge.members[1].config.reasoning.enabled and len(pool.asked) == 2
    assert pool.asked == [load_judge_config(n).backend for n in ("smollm2-pairwise", "smollm2-pairwise-reasoning")]
    assert isinstance(make_judge("smollm2-pairwise-reasoning", pool), PairwiseJudge)


def test_loading_an_ensemble_where_a_single_judge_is_needed_says_so():
    assert isinstance(load_judge_spec("smollm2-ensemble"), EnsembleJudgeConfig)
    with pytest.raises(ConfigError, match="is an ensemble"):
        load_judge_config("smollm2-ensemble")


@pytest.mark.parametrize("data, problem", [
    ({"name": "e", "ensemble": {"members": ["smollm2-pairwise", "nope-judge"]}}, "no judges file 'nope-judge'"),
    ({"name": "e", "ensemble": {"members": ["smollm2-pairwise", "smollm2-ensemble"]}}, "itself an ensemble"),
    ({"name": "e", "ensemble": {"members": ["smollm2-pairwise", "smollm2-pairwise"]}}, "distinct"),
    ({"name": "e", "ensemble": {"members": ["smollm2-pairwise"]}}, "at least 2"),
    ({"name": "e", "ensemble": {"members": ["smollm2-pairwise", "smollm2-pairwise-sc"], "aggregate": "median"}}, "aggregate"),
])
def test_validate_rejects_bad_ensembles(tmp_path, capsys, data, problem):
    from rlaif.cli import main

    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 1
    assert problem in "".join(capsys.readouterr())


def test_label_stage_with_an_ensemble_writes_members_and_resumes(tmp_path):
    from datasets import load_from_disk

    from rlaif.stages.label import label_stage
    from rlaif.store.runfolder import RunFolder

    spec = EnsembleJudgeConfig(name="e", ensemble=EnsembleConfig(members=["smollm2-pairwise", "smollm2-pairwise-reasoning"]))

    def handler(request):  # both members: the plain one and the reasoning one (rationale, then prefill)
        if request.max_tokens > 1:
            return Completion(choices=[{"text": "A is right. Verdict: A", "tokens": 6}], prompt_tokens=100)
        return verdict(0.8 if MARKER in shown(request.model_copy(update={"messages": request.messages[:2]}))[0] else 0.3)

    pool = FakePool(handler)
    run = RunFolder(tmp_path)
    summary = label_stage([pair(1), pair(2, marker_first=False)], spec, pool, run, batch_size=8, progress=False)
    assert summary["labeled"] == 2
    ds = load_from_disk(str(tmp_path / "dataset"))
    row = ds[0]
    assert row["judge"] == "e" and row["template"] == "judge/pairwise.jinja+judge/pairwise-reasoning.jinja"
    assert [r["judge"] for r in row["rationale"]] == ["smollm2-pairwise-reasoning"] * 2
    raw = json.loads(row["raw_verdicts"])
    assert set(raw["members"]) == {"smollm2-pairwise", "smollm2-pairwise-reasoning"}
    # both members read 0.8 (marked response shown first) and 1 - 0.3 (shown second): 0.75 (the reasoning member
    # through its prefill request)
    assert row["probability"] == pytest.approx(0.75) and row["spread"] == pytest.approx(0.0) and row["vote_share"] == 1.0
    asked = len(pool.asked)
    again = label_stage([pair(1), pair(2, marker_first=False)], spec, pool, run, batch_size=8, progress=False)
    assert again["reused_from_earlier_runs"] == 2 and again["judged_now"] == 0 and len(pool.asked) == asked + 2


@pytest.mark.vllm
def test_cli_label_with_the_ensemble_on_the_embedded_model(vllm_backend, tmp_path, monkeypatch, capsys):
    from datasets import load_from_disk

    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    asked = []
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: asked.append(cfg) or vllm_backend)
    pairs_file = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "capital", "prompt": "What is the capital of France?", "response_1": "The capital of France is Paris.",
         "response_2": "France is a country in Europe."},
        {"id": "add", "prompt": "What is 2 + 2?", "response_1": "2 + 2 = 5.", "response_2": "2 + 2 = 4."},
    ]
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert cli.main(["label", "--pairs", str(pairs_file), "--judge", "smollm2-ensemble", "--out", str(out), "--quiet"]) == 0
    assert len(asked) == 2  # one backend per member (the same engine config here)
    ds = load_from_disk(str(out / "dataset"))
    unlabeled = [json.loads(line) for line in (out / "unlabeled.jsonl").read_text().splitlines()]
    assert len(ds) + len(unlabeled) == 2 and all(u["reason"] for u in unlabeled)
    for row in ds:
        assert row["judge"] == "smollm2-ensemble" and 0.5 < row["probability"] <= 1.0
        assert row["rationale"] and all(r["text"].strip() for r in row["rationale"])
        assert set(json.loads(row["raw_verdicts"])["members"]) == {"smollm2-pairwise", "smollm2-pairwise-reasoning"}
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert all(len(j["members"]) == 2 and len(j["component_p"]) == 2 for j in judgments)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["judge"]["ensemble"]["members"] == ["smollm2-pairwise", "smollm2-pairwise-reasoning"]
