"""The audit's trust features: compare two judges, the baseline gate, the retest noise floor, template
sensitivity, and every judge kind (pointwise, ensemble) through the one factory.

The CLI runs end to end on a fake backend whose verdicts are scripted from what each prompt shows (which
response is the good one, which wording and principle the judge prompt uses), so every expected figure is known;
one test runs the same flags on the real vLLM engine.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlaif import cli
from rlaif.audit.compare import compare_arrays, mcnemar_exact, paired_sample_size
from rlaif.backends import Choice, Completion, FakeBackend
from rlaif.backends.pool import BackendPool

ROOT = Path(__file__).resolve().parents[1]
LLMBAR = ROOT / "tests" / "data" / "gold" / "llmbar" / "LLMBar_Natural-subset.json"
N = 60


def _gold(path: Path, n: int = N) -> Path:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        good_first = bool(rng.random() < 0.5)
        good, bad = f"good answer {i} " + "x" * int(rng.integers(1, 40)), f"bad answer {i} " + "y" * int(rng.integers(1, 40))
        rows.append({"id": f"g{i}", "prompt": f"question {i} (topic {i % 7})", "category": ["math", "writing"][i % 2],
                     "response_a": good if good_first else bad, "response_b": bad if good_first else good,
                     "label": "A" if good_first else "B"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pairwise_handler(wrong_share: float, wording_matters: bool = True):
    """P(first shown better) from the prompt: right (0.9 on the good response) unless a hash of the item and of the
    judge's system prompt (principle, wording) falls in the `wrong_share` bucket."""
    def handler(request):
        system, user = request.messages[0].content, request.messages[-1].content
        i = int(re.search(r"question (\d+)", user).group(1))
        good_first = user.index(f"good answer {i}") < user.index(f"bad answer {i}")
        salt = system if wording_matters else ""
        wrong = (zlib.crc32(f"{i}:{salt}".encode()) % 1000) / 1000 < wrong_share
        p_first = 0.9 if good_first != wrong else 0.1
        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p_first), "B": math.log(1 - p_first)}], tokens=1)])
    return handler


def _judge_yaml(tmp: Path, name: str, **changes) -> Path:
    config = yaml.safe_load((ROOT / "judges" / "smollm2-pairwise.yaml").read_text())
    config["name"] = name
    for key, value in changes.items():
        config[key] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _use(monkeypatch, handler) -> FakeBackend:
    backend = FakeBackend(handler)
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)
    return backend


def _audit(*args: str) -> int:
    return cli.main(["audit", "--quiet", "--bootstrap", "200", *args])


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def _verdicts(folder: Path) -> dict[str, str]:
    return {r["id"]: r["verdict"] for r in map(json.loads, (folder / "items.jsonl").read_text().splitlines())}


# ---------------------------------------------------------------- statistics by hand

def test_mcnemar_and_sample_size_by_hand():
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)  # P(X <= 1), X ~ Bin(10, 1/2), two-sided
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    # Connor (1987): discordance 0.2, difference 0.05, alpha 0.05, power 0.8
    expected = math.ceil((1.959964 * math.sqrt(0.2) + 0.841621 * math.sqrt(0.2 - 0.0025)) ** 2 / 0.0025)
    assert paired_sample_size(0.2, 0.05) == expected
    assert paired_sample_size(0.2, 0.0) is None and paired_sample_size(0.01, 0.2) is None


def test_compare_arrays_verdicts():
    rng = np.random.default_rng(0)
    n = 400
    gold = np.where(rng.random(n) < 0.5, "A", "B")
    truth = np.where(gold == "A", 0.8, 0.2)
    good = np.where(rng.random(n) < 0.9, truth, 1 - truth)
    bad = np.where(rng.random(n) < 0.6, truth, 1 - truth)
    better = compare_arrays(gold, bad, good)
    acc = better["accuracy_no_ties"]
    assert acc["difference"] == pytest.approx(acc["b"] - acc["a"], abs=1e-4) and acc["ci95"][0] > 0
    assert better["verdict"].startswith("B is better by") and better["mcnemar"]["p_value"] < 1e-6
    assert better["brier"]["difference"] < 0 and better["log_loss"]["difference"] < 0
    mc = better["mcnemar"]
    assert mc["both_right"] + mc["both_wrong"] + mc["a_right_b_wrong"] + mc["b_right_a_wrong"] == n
    worse = compare_arrays(gold, good, bad)
    assert worse["verdict"].startswith("A is better by")
    redraw = np.where(rng.random(n) < 0.9, truth, 1 - truth)
    twin = np.where(rng.random(n) < 0.9, good, redraw)  # the same judge with 10% of its readings drawn again
    same = compare_arrays(gold, good, twin)
    assert same["verdict"].startswith("No detectable difference")
    assert same["accuracy_no_ties"]["ci95"][0] <= 0 <= same["accuracy_no_ties"]["ci95"][1]
    if same["accuracy_no_ties"]["difference"]:
        assert same["items_needed"] and f"about {same['items_needed']} paired items" in same["verdict"]


# ---------------------------------------------------------------- compare, baseline

def test_compare_arrays_gives_intervals_on_large_gold_sets():
    """Above ~21,000 items the jackknife groups grow instead of the interval going missing (a gate on a big gold set
    must still see the noise)."""
    rng = np.random.default_rng(3)
    n = 30_000
    gold = rng.choice(["A", "B"], n)
    p_a = rng.random(n)
    p_b = np.clip(p_a + rng.normal(0.0, 0.2, n), 0.0, 1.0)
    for clusters in (None, [str(i // 6) for i in range(n)]):
        result = compare_arrays(gold, p_a, p_b, clusters=clusters)
        low, high = result["accuracy_no_ties"]["ci95"]
        assert low is not None and high is not None and low < result["accuracy_no_ties"]["difference"] < high
        assert high - low < 0.05, (low, high)  # about 4 x 0.5 / sqrt(n) times the discordance: narrow at this size


def test_compare_two_audits_and_two_judges(tmp_path, monkeypatch, capsys):
    gold = _gold(tmp_path / "gold.jsonl")
    _use(monkeypatch, _pairwise_handler(0.1))
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "good")) == 0
    _use(monkeypatch, _pairwise_handler(0.5))
    assert _audit("--gold", str(gold), "--judge", str(_judge_yaml(tmp_path, "other")), "--out", str(tmp_path / "bad")) == 0
    assert cli.main(["audit", "compare", str(tmp_path / "bad"), str(tmp_path / "good"), "--out", str(tmp_path / "cmp"),
                     "--bootstrap", "300"]) == 0
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    good, bad = _verdicts(tmp_path / "good"), _verdicts(tmp_path / "bad")
    labels = {r["id"]: r["label"] for r in map(json.loads, gold.read_text().splitlines())}
    b_only = sum(good[i] == labels[i] != bad[i] for i in labels)
    a_only = sum(bad[i] == labels[i] != good[i] for i in labels)
    assert result["n_paired"] == N and result["mcnemar"]["b_right_a_wrong"] == b_only and result["mcnemar"]["a_right_b_wrong"] == a_only
    assert result["mcnemar"]["p_value"] == pytest.approx(mcnemar_exact(a_only, b_only), abs=1e-4)
    assert result["changed"] == ["judge"] and result["verdict"].startswith("B is better")
    assert set(result["by_category"]) == {"math", "writing"}
    assert (tmp_path / "cmp" / "category_diff.png").stat().st_size > 1000
    assert "B is better" in (tmp_path / "cmp" / "compare.md").read_text() and (tmp_path / "cmp" / "compare.html").is_file()
    # two judges audited on the gold first: the same judge twice shows no difference
    _use(monkeypatch, _pairwise_handler(0.2))
    assert cli.main(["audit", "compare", "smollm2-pairwise", str(_judge_yaml(tmp_path, "twin")), "--gold", str(gold),
                     "--out", str(tmp_path / "cmp2"), "--bootstrap", "200", "--quiet"]) == 0
    twin = json.loads((tmp_path / "cmp2" / "compare.json").read_text())
    assert twin["accuracy_no_ties"]["difference"] == 0 and twin["verdict"].startswith("No detectable difference")
    assert (tmp_path / "cmp2" / "a-smollm2-pairwise" / "metrics.json").is_file()
    capsys.readouterr()
    assert cli.main(["audit", "compare", str(tmp_path / "good")]) == 2
    assert "needs two audits" in capsys.readouterr().err


def test_baseline_gate(tmp_path, monkeypatch, capsys):
    gold = _gold(tmp_path / "gold.jsonl")
    _use(monkeypatch, _pairwise_handler(0.1))
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "v1")) == 0
    fp = _metrics(tmp_path / "v1")["fingerprint"]
    assert fp["judge"]["name"] == "smollm2-pairwise" and fp["judge"]["template_version"] == "pairwise-2026.11-1"
    assert fp["judge"]["models"][0]["model"] == "smollm2-135m-instruct" and fp["gold"]["n_items"] == N
    # the same judge again: nothing changed, passes
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "v1b"), "--baseline", str(tmp_path / "v1" / "metrics.json")) == 0
    same = _metrics(tmp_path / "v1b")["baseline"]
    assert same["changed"] == [] and same["change"] == 0 and same["paired"] and same["passed"]
    # a worse judge (another template): exit 1, naming the judge as what changed
    worse = _judge_yaml(tmp_path, "smollm2-pairwise", template="judge/pairwise-paraphrase-1.jinja")
    _use(monkeypatch, _pairwise_handler(0.5))
    capsys.readouterr()
    assert _audit("--gold", str(gold), "--judge", str(worse), "--out", str(tmp_path / "v2"), "--baseline", str(tmp_path / "v1")) == 1
    err = capsys.readouterr().err
    base = _metrics(tmp_path / "v2")["baseline"]
    assert not base["passed"] and base["changed"] == ["judge"] and base["ci95"][1] < 0
    assert "gate FAILED" in err and "the judge changed" in err and "pairwise-paraphrase-1" in err
    assert "## Against the baseline" in (tmp_path / "v2" / "report.md").read_text()
    # the same drop tolerated by --max-drop: passes
    assert _audit("--gold", str(gold), "--judge", str(worse), "--out", str(tmp_path / "v2"), "--baseline",
                  str(tmp_path / "v1"), "--max-drop", "0.9") == 0
    # the gold set changed (a subset): paired on the shared items, named
    _use(monkeypatch, _pairwise_handler(0.1))
    assert _audit("--gold", str(gold), "--limit", "40", "--out", str(tmp_path / "v3"), "--baseline", str(tmp_path / "v1")) == 0
    sub = _metrics(tmp_path / "v3")["baseline"]
    assert sub["changed"] == ["gold"] and sub["n_paired"] == 40 and sub["change"] == 0


# ---------------------------------------------------------------- retest, templates

def test_retest_measures_the_judge_against_itself(tmp_path, monkeypatch):
    gold = _gold(tmp_path / "gold.jsonl")
    backend = _use(monkeypatch, _pairwise_handler(0.3))
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "r"), "--retest", "3") == 0
    retest = _metrics(tmp_path / "r")["retest"]
    assert retest["readings"] == ["repeat 1", "repeat 2", "repeat 3"] and retest["n_judged_in_all"] == N
    assert any("principle draw" in v for v in retest["varies"])
    # recompute from the three runs' judgments: the share of items whose verdict is not the same in all repeats
    def verdicts(folder):
        rows = [json.loads(x) for x in (folder / "judgments.jsonl").read_text().splitlines()]
        return {r["pair_id"]: "A" if r["p_first"] > 0.5 else "B" for r in rows}
    runs = [verdicts(tmp_path / "r"), verdicts(tmp_path / "r" / "retest" / "repeat-2"), verdicts(tmp_path / "r" / "retest" / "repeat-3")]
    changed = np.mean([len({run[f"g{i}"] for run in runs}) > 1 for i in range(N)])
    assert retest["share_verdict_changes"]["value"] == pytest.approx(changed, abs=1e-4)
    assert 0 < changed < 1 and retest["mean_pairwise_agreement"]["value"] < 1
    assert "## Noise floor" in (tmp_path / "r" / "report.md").read_text()
    calls = len(backend.requests)
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "r"), "--retest", "3") == 0
    assert len(backend.requests) == calls, "a rerun reuses every repeat's judgments"
    # a judge where nothing varies (every principle, greedy verdict): identical repeats, said so
    fixed = _judge_yaml(tmp_path, "all-principles", principles={"mode": "all"})
    assert _audit("--gold", str(gold), "--limit", "10", "--judge", str(fixed), "--out", str(tmp_path / "f"), "--retest", "2") == 0
    still = _metrics(tmp_path / "f")["retest"]
    assert still["varies"] == [] and still["share_verdict_changes"]["value"] == 0
    assert "identical by construction" in (tmp_path / "f" / "report.md").read_text()
    assert cli.main(["audit", "--gold", str(gold), "--retest", "1", "--out", str(tmp_path / "x")]) == 2


def test_templates_measure_sensitivity_to_wording(tmp_path, monkeypatch):
    gold = _gold(tmp_path / "gold.jsonl")
    templates = ["judge/pairwise-paraphrase-1.jinja", "judge/pairwise-paraphrase-2.jinja"]
    _use(monkeypatch, _pairwise_handler(0.3, wording_matters=False))
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "robust"), "--templates", *templates) == 0
    robust = _metrics(tmp_path / "robust")["templates"]
    assert robust["share_verdict_changes"]["value"] == 0 and robust["accuracy_spread"] == 0
    _use(monkeypatch, _pairwise_handler(0.3))
    assert _audit("--gold", str(gold), "--out", str(tmp_path / "t"), "--templates", *templates) == 0
    result = _metrics(tmp_path / "t")["templates"]
    assert result["readings"] == ["judge/pairwise.jinja", *templates] and result["n_judged_in_all"] == N
    main, p1, p2 = (_verdicts(tmp_path / "t"), _verdicts(tmp_path / "t" / "templates" / "pairwise-paraphrase-1"),
                    _verdicts(tmp_path / "t" / "templates" / "pairwise-paraphrase-2"))
    changed = np.mean([len({main[k], p1[k], p2[k]}) > 1 for k in main])
    assert 0 < changed and result["share_verdict_changes"]["value"] == pytest.approx(changed, abs=1e-4)
    assert result["pairwise_changes"]["judge/pairwise.jinja vs judge/pairwise-paraphrase-1.jinja"] == pytest.approx(
        np.mean([main[k] != p1[k] for k in main]), abs=1e-4)
    for t in templates:  # each wording's judgments were made under its own template version
        folder = tmp_path / "t" / "templates" / Path(t).stem
        rows = [json.loads(x) for x in (folder / "judgments.jsonl").read_text().splitlines()]
        assert {r["template_version"] for r in rows} == {f"{Path(t).stem}-2026.11-1"}
        assert _metrics(folder)["fingerprint"]["judge"]["template"] == t
    assert "## Template sensitivity" in (tmp_path / "t" / "report.md").read_text()
    ensemble = tmp_path / "ens.yaml"
    ensemble.write_text(yaml.safe_dump({"name": "ens", "ensemble": {"members": [
        str(_judge_yaml(tmp_path, "m1")), str(_judge_yaml(tmp_path, "m2"))]}}))
    assert _audit("--gold", str(gold), "--judge", str(ensemble), "--out", str(tmp_path / "e"), "--templates", templates[0]) == 2


# ---------------------------------------------------------------- every judge kind

def test_pointwise_and_ensemble_judges_are_audited(tmp_path, monkeypatch):
    gold = _gold(tmp_path / "gold.jsonl", n=30)

    def scores(request):  # pointwise: 7 for a good answer, 3 for a bad one, 5 for both on every 10th item
        user = request.messages[-1].content
        i = int(re.search(r"question (\d+)", user).group(1))
        score = "5" if i % 10 == 0 else ("7" if "good answer" in user else "3")
        return Completion(choices=[Choice(text=score, logprobs=[{score: 0.0}], tokens=1)])

    _use(monkeypatch, scores)
    assert _audit("--gold", str(gold), "--judge", "smollm2-pointwise", "--out", str(tmp_path / "pw")) == 0
    pw = _metrics(tmp_path / "pw")
    assert pw["n_judged"] == 30 and pw["judge_verdicts"]["tie"] == 3  # items 0, 10 and 20: equal scores
    assert pw["agreement"]["accuracy_no_ties"]["value"] == pytest.approx(27 / 30)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "pw" / "items.jsonl").read_text().splitlines())}
    p_good = 1 / (1 + math.exp(-4.0))
    assert rows["g1"]["p_a"] == pytest.approx(p_good if rows["g1"]["label"] == "A" else 1 - p_good)
    assert rows["g10"]["verdict"] == "tie" and pw["fingerprint"]["judge"]["kind"] == "pointwise"
    assert (tmp_path / "pw" / "scores.jsonl").is_file()

    _use(monkeypatch, _pairwise_handler(0.2))
    ensemble = tmp_path / "ens.yaml"
    ensemble.write_text(yaml.safe_dump({"name": "ens", "ensemble": {"members": [
        str(_judge_yaml(tmp_path, "m1")), str(_judge_yaml(tmp_path, "m2", principles={"mode": "sample", "k": 1, "seed": 5}))]}}))
    assert _audit("--gold", str(gold), "--judge", str(ensemble), "--out", str(tmp_path / "ens"), "--retest", "2") == 0
    ens = _metrics(tmp_path / "ens")
    assert ens["n_judged"] == 30 and ens["fingerprint"]["judge"]["kind"] == "ensemble"
    assert ens["biases"]["n_both_orders"] == 30 and len(ens["fingerprint"]["judge"]["models"]) == 2
    assert ens["retest"]["n_judged_in_all"] == 30 and len(ens["retest"]["varies"]) == 2


# ---------------------------------------------------------------- the real engine

def test_retest_and_templates_on_the_real_judge(vllm_backend, tmp_path, monkeypatch):
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    out = tmp_path / "real"
    assert _audit("--gold", str(LLMBAR), "--limit", "4", "--out", str(out), "--retest", "2",
                  "--templates", "judge/pairwise-paraphrase-1.jinja") == 0
    metrics = _metrics(out)
    for key in ("retest", "templates"):
        assert metrics[key]["n_items"] == 4 and metrics[key]["n_judged_in_all"] == metrics["n_judged"]
    versions = {json.loads(x)["template_version"]
                for x in (out / "templates" / "pairwise-paraphrase-1" / "judgments.jsonl").read_text().splitlines()}
    assert versions == {"pairwise-paraphrase-1-2026.11-1"}
    assert len((out / "retest" / "repeat-2" / "judgments.jsonl").read_text().splitlines()) == 4


def test_validate_checks_every_judge_template(tmp_path, monkeypatch):
    from rlaif.stages.validate import validate_all

    seen: list[str] = []
    assert validate_all([], echo=seen.append) == []
    assert any("pairwise-paraphrase-1.jinja: template pairwise-paraphrase-1-2026.11-1" in line for line in seen)
    assert any("pairwise-paraphrase-2.jinja: template pairwise-paraphrase-2-2026.11-1" in line for line in seen)
    broken = tmp_path / "prompts" / "judge"
    broken.mkdir(parents=True)
    (broken / "bad.jinja").write_text("{% block system %}no version line, {{ undefined_thing }}{% endblock %}")
    monkeypatch.setenv("RLAIF_HOME", str(tmp_path))
    problems = validate_all([], echo=lambda line: None)
    assert problems and "bad.jinja" in " ".join(problems)
