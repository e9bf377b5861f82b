"""The audit end to end: gold importers, judging or matching labels, report files, gate, human sampling."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rlaif.audit.gold import GoldItem, GoldMapping, load_gold
from rlaif.backends import Choice, Completion, FakeBackend, SharedBackend

GOLD_DIR = Path(__file__).resolve().parent / "data" / "gold"  # vendored subsets (tests/data/gold/README.md)
PANDALM = GOLD_DIR / "pandalm" / "testset-v1-subset.json"
LLMBAR = GOLD_DIR / "llmbar" / "LLMBar_Natural-subset.json"


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_pandalm_and_llmbar_importers():
    items, bad = load_gold(PANDALM)
    assert len(items) == 45 and len(bad) == 6
    assert all(len(i.annotators) == 3 for i in items)
    first = items[0]
    assert first.id == "pandalm-0" and first.label == "B" and first.annotators == ["B", "B", "B"] and first.category == "Grammarly"
    assert "Rewrite the sentence" in first.prompt and "If you have any questions about my rate" in first.prompt
    assert all("valid string" in b.error for b in bad), "only the rows with a null response are rejected"
    items, bad = load_gold(LLMBAR)
    assert len(items) == 30 and not bad and {i.label for i in items} == {"A", "B"}


def test_canonical_and_mapped_with_bad_rows(tmp_path):
    good = {"id": "g1", "prompt": "p", "response_a": "a", "response_b": "", "label": "A", "annotators": ["A", "B", "A"]}
    path = _write(tmp_path / "gold.jsonl", [good, '{"id": "g2"', {"id": "g3", "prompt": "p", "response_a": "a", "response_b": "b", "label": "C"}])
    items, bad = load_gold(path)
    assert [i.id for i in items] == ["g1"] and items[0].response_b == ""
    assert [b.line for b in bad] == [2, 3] and "not valid JSON" in bad[0].error and "label" in bad[1].error
    other = _write(tmp_path / "other.jsonl", [{"q": "Q1", "x": "a", "y": "b", "winner": "left"}, {"q": "Q2", "x": "a", "y": "b", "winner": "??"}])
    mapping = GoldMapping(prompt=["q"], response_a="x", response_b="y", label="winner", values={"left": "A", "right": "B"})
    items, bad = load_gold(other, mapping=mapping)
    assert [(i.prompt, i.label) for i in items] == [("Q1", "A")] and "'??'" in bad[0].error


def _fake_label_run(tmp_path, gold: list[GoldItem]):
    """A real `label_stage` run folder made by a judge that prefers the response containing 'good'."""
    from rlaif.audit.judging import gold_pair
    from rlaif.config import load_judge_config
    from rlaif.stages.label import label_stage
    from rlaif.store.runfolder import RunFolder

    def handler(request):
        user = request.messages[-1].content
        a_part = user.split("[BEGIN RESPONSE A]")[1].split("[END RESPONSE A]")[0]
        p_a = 0.9 if "good" in a_part else 0.1
        import math

        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p_a), "B": math.log(1 - p_a)}], tokens=1)])

    run = tmp_path / "labels"
    label_stage([gold_pair(g) for g in gold], load_judge_config("smollm2-pairwise"), SharedBackend(FakeBackend(handler)), RunFolder(run),
                batch_size=4, progress=False)
    return run


def _gold(n=40):
    items = []
    for i in range(n):
        good_first = i % 2 == 0
        a, b = ("good answer", "bad answer") if good_first else ("bad answer", "good answer")
        label = ("A" if good_first else "B") if i % 10 else ("B" if good_first else "A")  # humans disagree on 1 in 10
        items.append(GoldItem(id=f"g{i}", prompt=f"question {i}", response_a=a, response_b=b, label=label,
                              annotators=[label, label, "tie"], category="even" if i % 4 < 2 else "odd"))
    return items


def test_audit_from_label_run_writes_report_and_gates(tmp_path, capsys):
    from rlaif import cli

    gold = _gold()
    labels = _fake_label_run(tmp_path, gold)
    gold_file = _write(tmp_path / "gold.jsonl", [g.model_dump() for g in gold])
    out = tmp_path / "audit"
    assert cli.main(["audit", "--labels", str(labels), "--gold", str(gold_file), "--out", str(out), "--bootstrap", "300"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["agreement"]["accuracy_no_ties"]
    assert acc["value"] == pytest.approx(0.9) and acc["ci95"][0] < 0.9 < acc["ci95"][1]
    assert metrics["n_judged"] == 40 and metrics["biases"]["position_consistency"] == 1.0
    assert metrics["humans"]["n_annotators"] == 3
    assert set(metrics["by_category"]) == {"even", "odd"}
    for row in metrics["by_category"].values():
        lo, hi = row["accuracy_no_ties_ci95"]
        assert lo < row["accuracy_no_ties"] <= hi and hi - lo > 0.1, "20 items per group leave a wide interval"
    for name in ("report.md", "report.html", "reliability.png", "coverage.png"):
        assert (out / name).stat().st_size > 200
    assert "accuracy_no_ties" in (out / "report.md").read_text() and "<table>" in (out / "report.html").read_text()
    assert cli.main(["audit", "--labels", str(labels), "--gold", str(gold_file), "--out", str(out), "--bootstrap", "100", "--min-accuracy", "0.95"]) == 1
    assert "gate FAILED" in capsys.readouterr().err
    assert cli.main(["audit", "--labels", str(labels), "--gold", str(gold_file), "--out", str(out), "--bootstrap", "100", "--min-kappa", "0.5"]) == 0


def test_humans_sample_export_import_roundtrip(tmp_path):
    from rlaif import cli
    from rlaif.audit.sampling import labeled_candidates, select

    gold = _gold(30)
    labels = _fake_label_run(tmp_path, gold)
    cands = labeled_candidates(labels)
    assert len(cands) == 30 and all(c.confidence == pytest.approx(0.9) for c in cands)
    assert select(cands, 10, "uniform", seed=1) == select(cands, 10, "uniform", seed=1)
    assert len({c.pair_id for c in select(cands, 10, "stratified")}) == 10
    out = tmp_path / "annotate.csv"
    assert cli.main(["humans", "sample", "--run", str(labels), "--n", "5", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5 and all(r["human_label"] == "" for r in rows) and "p_response_1" not in rows[0]
    rows[0]["human_label"], rows[1]["human_label"], rows[2]["human_label"] = "A", "2", "maybe"
    rows.append({**rows[0], "human_label": "B", "annotator": "second"})
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    gold_out = tmp_path / "gold.jsonl"
    assert cli.main(["humans", "import", "--annotations", str(out), "--out", str(gold_out)]) == 0
    imported, bad = load_gold(gold_out)
    assert not bad and len(imported) == 2
    assert imported[0].annotators == ["A", "B"] and imported[0].label == "tie" and imported[1].label == "B"


@pytest.mark.vllm
def test_audit_real_judge_on_gold_subset(vllm_backend, tmp_path, monkeypatch):
    from rlaif import cli
    from rlaif.backends.pool import BackendPool

    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: vllm_backend)
    out = tmp_path / "audit"
    code = cli.main(["audit", "--gold", str(LLMBAR), "--limit", "6", "--out", str(out),
                     "--bootstrap", "200", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_gold"] == 6 and metrics["n_judged"] + metrics["n_unlabeled"] == 6
    if metrics["n_judged"]:
        assert 0.0 <= metrics["agreement"]["accuracy_no_ties"]["value"] <= 1.0
        assert metrics["biases"]["n_both_orders"] == metrics["n_judged"]
    judgments = (out / "judgments.jsonl").read_text().splitlines()
    assert len(judgments) == 6, "every gold item is judged once, in both orders"


def test_audit_recovers_known_accuracy_and_miscalibration():
    """A synthetic judge whose truth is known: P(A better) = sigmoid(z), but it reports sigmoid(3z)."""
    import math
    import re

    import numpy as np

    from rlaif.audit.compute import compute_audit
    from rlaif.audit.judging import AuditRecord, gold_pair
    from rlaif.config import load_judge_config
    from rlaif.judging.pairwise import PairwiseJudge

    rng = np.random.default_rng(7)
    z = rng.normal(0, 1.5, size=800)
    gold_a = rng.random(800) < 1 / (1 + np.exp(-z))
    items = [GoldItem(id=f"s{i}", prompt=f"item {i}", response_a=f"a{i}", response_b=f"b{i}", label="A" if g else "B")
             for i, g in enumerate(gold_a)]

    def handler(request):
        user = request.messages[-1].content
        i = int(re.search(r"item (\d+)", user).group(1))
        shown_first_is_a = user.index(f"a{i}") < user.index(f"b{i}")
        p_a = 1 / (1 + math.exp(-3 * z[i]))
        p_first = p_a if shown_first_is_a else 1 - p_a
        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p_first), "B": math.log(1 - p_first)}], tokens=1)])

    judge = PairwiseJudge(load_judge_config("smollm2-pairwise"), FakeBackend(handler))
    judgments = judge.judge([gold_pair(i) for i in items])
    metrics = compute_audit([AuditRecord(i, j) for i, j in zip(items, judgments)], n_boot=500)

    zz = np.random.default_rng(0).normal(0, 1.5, size=400_000)
    true_accuracy = float(np.mean(1 / (1 + np.exp(-np.abs(zz)))))  # the judge picks sign(z); humans follow sigmoid(z)
    acc = metrics["agreement"]["accuracy_no_ties"]
    assert acc["ci95"][0] <= true_accuracy <= acc["ci95"][1]
    ts = metrics["calibration"]["temperature_scaling"]
    assert ts["temperature_all_items"] == pytest.approx(3.0, rel=0.2)
    assert ts["after_out_of_fold"]["ece"] < ts["before"]["ece"] and ts["after_out_of_fold"]["log_loss"] < ts["before"]["log_loss"]
    assert metrics["biases"]["position_consistency"] == 1.0 and metrics["biases"]["first_position_rate"] == pytest.approx(0.5, abs=0.05)
