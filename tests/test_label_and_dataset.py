"""Resumable labeling over a run folder, the TRL dataset and its side files, reading rows, making pairs."""

from __future__ import annotations

import json

import pytest
from fakes import MARKER, fake, judge_config, pair, prefers_marker, shown, verdict

from rlaif.backends import Completion, SharedBackend
from rlaif.errors import InputError
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.records import CandidatePair, Judgment, Sample
from rlaif.stages.generate import make_pairs
from rlaif.stages.label import JUDGMENTS, LabelOptions, label_pairs, label_stage
from rlaif.store.rows import PROVENANCE_COLUMNS
from rlaif.store.runfolder import RunFolder, read_rows


def pairs(n=5):
    return [pair(i, marker_first=i % 2 == 0) for i in range(n)]


def judged_lines(run: RunFolder) -> list[dict]:
    return [json.loads(line) for line in run.file(JUDGMENTS).read_text().splitlines()]


def label(handler, run, items, batch_size=2):
    judge = PairwiseJudge(judge_config(), fake(handler))
    return label_pairs(items, judge, run, batch_size=batch_size, progress=False), judge.backend


def test_rerun_reuses_labels_without_calls_or_duplicate_lines(tmp_path):
    run, items = RunFolder(tmp_path), pairs()
    first, backend = label(prefers_marker(), run, items)
    assert len(backend.requests) == 10 and first.judged_now == 5 and first.reused == 0
    assert all(j.labeled for j in first.judgments) and len(judged_lines(run)) == 5
    again, backend = label(prefers_marker(), run, items)
    assert len(backend.requests) == 0 and again.judged_now == 0 and again.reused == 5
    assert len(judged_lines(run)) == 5
    assert [j.model_dump() for j in again.judgments] == [j.model_dump() for j in first.judgments]


def test_killed_run_resumes_with_only_the_rest(tmp_path):
    run, items = RunFolder(tmp_path), pairs()
    calls = []

    def dies_after_first_batch(request):  # batch of 2 pairs = 4 requests
        calls.append(request)
        if len(calls) > 4:
            raise RuntimeError("killed")
        return prefers_marker()(request)

    with pytest.raises(RuntimeError, match="killed"):
        label(dies_after_first_batch, run, items)
    assert [line["pair_id"] for line in judged_lines(run)] == ["pair-0", "pair-1"]
    resumed, backend = label(prefers_marker(), run, items)
    assert resumed.judged_now == 3 and resumed.reused == 2 and len(backend.requests) == 6
    assert {shown(r)[0].split(":")[0] for r in backend.requests} == {"Answer 2", "Answer 3", "Answer 4"}
    lines = judged_lines(run)
    assert len(lines) == 5 and len({line["key"] for line in lines}) == 5
    assert [j.pair_id for j in resumed.judgments] == [p.id for p in items]


def test_unlabeled_pairs_are_retried_on_rerun(tmp_path):
    run, items = RunFolder(tmp_path), pairs(3)
    failed, _ = label(lambda r: Completion(error="server busy"), run, items)
    assert not any(j.labeled for j in failed.judgments) and all("server busy" in j.reason for j in failed.judgments)
    retried, backend = label(prefers_marker(), run, items)
    assert retried.judged_now == 3 and len(backend.requests) == 6 and all(j.labeled for j in retried.judgments)
    assert len(judged_lines(run)) == 6  # the old unlabeled lines stay; the latest wins
    third, backend = label(prefers_marker(), run, items)
    assert len(backend.requests) == 0 and all(j.labeled for j in third.judgments)


def test_ties_are_final_and_not_judged_again(tmp_path):
    run, items = RunFolder(tmp_path), pairs(3)
    first, backend = label(lambda r: verdict(0.5), run, items)
    assert len(backend.requests) == 6 and all(j.tie and j.final and not j.labeled for j in first.judgments)
    assert all(j.reason.startswith("tie: ") for j in first.judgments)
    again, backend = label(prefers_marker(), run, items)
    assert len(backend.requests) == 0 and again.reused == 3 and all(j.tie for j in again.judgments)


def test_duplicate_pairs_are_judged_once(tmp_path):
    run, items = RunFolder(tmp_path), pairs(3)
    copy = items[1].model_copy(update={"id": "copy-of-1"})
    result, backend = label(prefers_marker(), run, [*items, copy, items[0]])
    assert len(backend.requests) == 6 and len(result.judgments) == 3
    assert result.duplicates == ["copy-of-1", "pair-0"] and len(judged_lines(run)) == 3


def _mostly_readable(request):
    if "UNREADABLE" in request.messages[1].content:
        return Completion(choices=[{"text": "Sure", "logprobs": [{"Sure": -0.1}]}])
    return prefers_marker(0.8)(request)


def test_label_stage_writes_trl_dataset_and_side_files(tmp_path):
    from datasets import load_from_disk

    run = RunFolder(tmp_path / "run")
    items = [*pairs(4), pair(9, prompt="UNREADABLE question")]
    skipped = [{"pair_id": "p:0-1", "reason": "identical responses"}]
    summary = label_stage(items, judge_config(), SharedBackend(fake(_mostly_readable)), run, batch_size=2, progress=False,
                          options=LabelOptions(skipped=skipped))

    ds = load_from_disk(str(tmp_path / "run" / "dataset"))
    assert {"prompt", "chosen", "rejected", *PROVENANCE_COLUMNS} <= set(ds.column_names)
    assert len(ds) == 4
    by_id = {p.id: p for p in items}
    for row in ds:
        p = by_id[row["pair_id"]]
        assert row["prompt"] == [{"role": "user", "content": p.prompt}]
        assert [m["role"] for m in row["chosen"]] == ["assistant"] and [m["role"] for m in row["rejected"]] == ["assistant"]
        assert MARKER in row["chosen"][0]["content"] and MARKER not in row["rejected"][0]["content"]
        assert row["probability"] >= 0.5 and row["probability"] == pytest.approx(0.8)
        assert row["chosen_is_response_1"] == (MARKER in p.response_1) and row["orders_agree"] is True
        assert row["p_response_1"] == pytest.approx(0.8 if MARKER in p.response_1 else 0.2)
        assert row["judge"] == "test-judge" and row["judge_model"] == "fake-judge" and row["principle_ids"] == ["helpfulness"]
        assert set(json.loads(row["raw_verdicts"])["helpfulness"]) == {"12", "21"}

    unlabeled = [json.loads(line) for line in (run.path / "unlabeled.jsonl").read_text().splitlines()]
    assert {u["pair_id"]: u["reason"] for u in unlabeled}.keys() == {"pair-9", "p:0-1"}
    assert "no verdict token" in next(u["reason"] for u in unlabeled if u["pair_id"] == "pair-9")
    manifest = json.loads((run.path / "manifest.json").read_text())
    counts = manifest["counts"]
    assert (counts["pairs"], counts["labeled"], counts["unlabeled"], counts["judged_now"]) == (5, 4, 2, 5)
    assert counts["unlabeled_reasons"] == {"no verdict token (A/B) in the top 1 logprobs": 1, "identical responses": 1}
    assert counts["orders_agree_rate"] == 1.0 and {k: v for k, v in summary.items() if k != "backend_stats"} == counts
    # the fake backend answers the stats every backend keeps: 5 pairs x 2 orders, all answered
    assert manifest["backend_stats"] == summary["backend_stats"]
    assert (summary["backend_stats"]["requests"], summary["backend_stats"]["failed"]) == (10, 0)
    assert manifest["template"]["version"] == "pairwise-2026.11-1" and manifest["judge"]["name"] == "test-judge"
    assert len((run.path / "preferences.jsonl").read_text().splitlines()) == 4

    again = label_stage(items, judge_config(), SharedBackend(fake(_mostly_readable)), run, batch_size=2, progress=False)
    assert again["judged_now"] == 1 and again["reused_from_earlier_runs"] == 4 and again["labeled"] == 4
    assert len(load_from_disk(str(tmp_path / "run" / "dataset"))) == 4


def test_label_stage_with_no_labeled_pair_writes_empty_dataset(tmp_path):
    from datasets import load_from_disk

    run = RunFolder(tmp_path / "run")
    summary = label_stage(pairs(2), judge_config(), SharedBackend(fake(lambda r: verdict(0.5))), run, batch_size=2, progress=False)
    assert summary["labeled"] == 0 and summary["unlabeled"] == 2
    ds = load_from_disk(str(tmp_path / "run" / "dataset"))
    assert len(ds) == 0 and {"prompt", "chosen", "rejected", *PROVENANCE_COLUMNS} <= set(ds.column_names)


def test_append_after_torn_line_keeps_new_records(tmp_path):
    run = RunFolder(tmp_path)
    judgments = label(prefers_marker(), run, pairs(1))[0].judgments
    with run.file(JUDGMENTS).open("a") as fh:
        fh.write('{"key": "torn-by-a-kill", "pair')
    run.append(JUDGMENTS, judgments)
    assert len(run.read(JUDGMENTS, Judgment)) == 2


def test_read_rows_keeps_good_rows_and_reports_bad_ones(tmp_path):
    good = {"id": "p1", "prompt": "q", "response_1": "a", "response_2": "b"}
    lines = [
        json.dumps(good),                                        # 1 ok
        '{"id": "p2", "prompt": ',                               # 2 invalid JSON
        json.dumps([good]),                                      # 3 a list
        json.dumps({k: v for k, v in good.items() if k != "response_2"}),  # 4 missing field
        "",                                                      # 5 blank: ignored
        json.dumps({**good, "id": "p6", "response_1": "  "}),     # 6 blank text
        json.dumps({**good, "id": "p7", "response_2": 7}),       # 7 not a string
        json.dumps({**good, "id": "p8"}),                        # 8 ok
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rows, errors = read_rows(path, CandidatePair)
    assert [r.id for r in rows] == ["p1", "p8"]
    assert [e.line for e in errors] == [2, 3, 4, 6, 7]
    messages = [e.error for e in errors]
    assert messages[0].startswith("not valid JSON")
    assert messages[1] == "expected a JSON object, got list"
    assert messages[2] == "response_2: Field required"
    assert messages[3] == "response_1: must be a non-empty string"
    assert messages[4].startswith("response_2: Input should be a valid string")
    assert all(e.file == str(path) and e.raw == lines[e.line - 1] for e in errors)
    with pytest.raises(InputError, match="cannot read"):
        read_rows(tmp_path / "missing.jsonl", CandidatePair)


def test_make_pairs_skips_identical_and_empty_with_reasons():
    def sample(prompt_id, index, text):
        return Sample(prompt_id=prompt_id, prompt=f"prompt {prompt_id}", index=index, response=text, model="policy")

    samples = [sample("p", 2, ""), sample("p", 0, "Hello there"), sample("p", 1, "Hello there \n"),
               sample("p", 3, "Something else"), sample("q", 0, "one"), sample("q", 1, "two")]
    made, skipped = make_pairs(samples)
    assert [(p.id, p.response_1, p.response_2) for p in made] == [
        ("p:0-3", "Hello there", "Something else"), ("p:1-3", "Hello there \n", "Something else"), ("q:0-1", "one", "two")]
    assert made[0].prompt == "prompt p" and made[0].source == {"prompt_id": "p", "samples": [0, 3], "model": "policy"}
    assert skipped == [
        {"pair_id": "p:0-1", "reason": "identical responses"}, {"pair_id": "p:0-2", "reason": "empty response"},
        {"pair_id": "p:1-2", "reason": "empty response"}, {"pair_id": "p:2-3", "reason": "empty response"}]


def test_make_pairs_never_pairs_responses_to_different_prompts():
    samples = [Sample(prompt_id="dup", prompt=p, index=i, response=f"{p} answer {i}", model="m")
               for p in ("First prompt", "Second prompt") for i in range(2)]
    made, _ = make_pairs(samples)
    assert all(p.response_1.startswith(p.prompt) and p.response_2.startswith(p.prompt) for p in made)
    assert len({p.id for p in made}) == len(made)
