"""The streaming label stage: inputs of any format read lazily, duplicates by content, compact judgments,
the SQLite index beside judgments.jsonl, Arrow shards, and deterministic shards of one input."""

from __future__ import annotations

import json

import pytest
from fakes import fake, judge_config, pair, prefers_marker

from rlaif.backends import SharedBackend
from rlaif.config import FakeBackendConfig, JudgeConfig, PrincipleSelection
from rlaif.records import CandidatePair, Judgment
from rlaif.stages.label import JUDGMENTS, LabelOptions, in_shard, label_stage
from rlaif.store.datasets import DatasetWriter, pairwise_features
from rlaif.store.index import JudgmentIndex, SeenSet, judgment_line
from rlaif.store.inputs import count_rows, input_format, iter_input
from rlaif.store.runfolder import RowError, RunFolder


def rows(n: int) -> list[dict]:
    return [pair(i, marker_first=i % 2 == 0).model_dump(exclude={"source"}) for i in range(n)]


def run_label(tmp_path, items, name="out", **kw):
    backend = fake(prefers_marker())
    summary = label_stage(items, judge_config(), SharedBackend(backend), RunFolder(tmp_path / name), batch_size=3,
                          progress=False, options=LabelOptions(**kw))
    return summary, backend


def test_same_texts_under_a_new_id_are_judged_once_and_both_ids_keep_their_label(tmp_path):
    from datasets import load_from_disk

    items = [pair(i) for i in range(6)]
    items.insert(3, CandidatePair(id="row-dup", prompt=items[0].prompt, response_1=items[0].response_1,
                                  response_2=items[0].response_2))
    summary, backend = run_label(tmp_path, items)
    assert len(backend.requests) == 2 * 6  # six distinct pairs, both orders
    assert summary["pairs"] == 7 and summary["unique_pairs"] == 6 and summary["duplicate_pairs"] == 1
    assert summary["labeled"] + summary["unlabeled"] == 7
    ids = load_from_disk(str(tmp_path / "out" / "dataset"))["pair_id"]
    assert sorted(ids) == sorted(p.id for p in items)
    rows_by_id = {r["pair_id"]: r for r in map(json.loads, (tmp_path / "out" / "preferences.jsonl").open())}
    assert rows_by_id["row-dup"]["probability"] == rows_by_id["pair-0"]["probability"]
    assert len((tmp_path / "out" / JUDGMENTS).read_text().splitlines()) == 6


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "parquet-folder", "saved"])
def test_every_input_format_is_read_lazily_with_bad_rows_reported(tmp_path, kind):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    data = rows(5)
    data[2] = {**data[2], "response_1": "   "}  # blank text: a RowError, the rest goes on
    if kind == "jsonl":
        path = tmp_path / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    elif kind == "parquet":
        path = tmp_path / "pairs.parquet"
        pq.write_table(pa.Table.from_pylist(data), path)
    elif kind == "parquet-folder":
        path = tmp_path / "parts"
        path.mkdir()
        pq.write_table(pa.Table.from_pylist(data[:2]), path / "a.parquet")
        pq.write_table(pa.Table.from_pylist(data[2:]), path / "b.parquet")
    else:
        path = tmp_path / "saved"
        Dataset.from_list(data).save_to_disk(str(path))
    assert input_format(path) == ("parquet" if kind.startswith("parquet") else kind)
    assert count_rows(path) == 5
    stream = iter_input(path, CandidatePair)
    assert not isinstance(stream, list)
    got = list(stream)
    assert [n for n, _ in got] == [1, 2, 3, 4, 5]
    assert isinstance(got[2][1], RowError) and "response_1" in got[2][1].error
    summary, _ = run_label(tmp_path, iter_input(path, CandidatePair))
    assert summary["pairs"] == 4 and summary["invalid_rows"] == 1 and summary["labeled"] == 4


def test_compact_judgments_keep_prompts_only_for_unlabeled_and_the_sample(tmp_path):
    items = [pair(i) for i in range(40)]
    summary, _ = run_label(tmp_path, items, keep_prompts=0.0)
    lines = [json.loads(line) for line in (tmp_path / "out" / JUDGMENTS).read_text().splitlines()]
    orders = [o for line in lines for pv in line["per_principle"] for o in pv["orders"]]
    assert summary["labeled"] == 40 and not any("messages" in o for o in orders)
    assert all(o["top_logprobs"] for o in orders)  # the verdict logprobs stay
    summary, _ = run_label(tmp_path, items, name="all", keep_prompts=1.0)
    lines = [json.loads(line) for line in (tmp_path / "all" / JUDGMENTS).read_text().splitlines()]
    assert all(o["messages"] for line in lines for pv in line["per_principle"] for o in pv["orders"])
    unlabeled = Judgment(key="k", pair_id="p", pair_key="q", per_principle=[], reason="helpfulness: unreadable",
                         judge="j", model="m", backend="b", template="t", template_version="1",
                         constitution_version="1", principle_ids=[])
    assert Judgment.model_validate_json(judgment_line(unlabeled, keep_prompt=False)) == unlabeled


def test_the_index_catches_up_with_lines_a_killed_run_wrote_after_its_last_commit(tmp_path):
    items = [pair(i) for i in range(5)]
    run_label(tmp_path, items)
    folder = tmp_path / "out"
    judge = JudgeConfig(name="other", principles=PrincipleSelection(mode="fixed", ids=["helpfulness"]))
    extra = Judgment.model_validate_json((folder / JUDGMENTS).read_text().splitlines()[0]).model_copy(
        update={"key": "written-after-commit", "judge": judge.name})
    with (folder / JUDGMENTS).open("a") as fh:
        fh.write(judgment_line(extra, False) + '{"key": "torn')  # a whole line, then a torn one
    with JudgmentIndex(folder / JUDGMENTS) as index:
        found = index.lookup(["written-after-commit", "torn"])
        assert list(found) == ["written-after-commit"] and found["written-after-commit"][1] is True
        assert index.read(found["written-after-commit"][0]).judge == "other"
        assert index.count() == 6
    (folder / "judgments.index.sqlite").unlink()  # a lost index is rebuilt from the file
    again, backend = run_label(tmp_path, items)
    assert again["reused_from_earlier_runs"] == 5 and not backend.requests


def test_seen_set_reports_repeats_within_and_across_calls(tmp_path):
    with SeenSet(tmp_path, "t") as seen:
        assert seen.first_seen([("a", 1), ("b", 2), ("a", 3)]) == {"a": 1}
        assert seen.first_seen([("b", 4), ("c", 5)]) == {"b": 2}
    assert not list(tmp_path.glob(".t.seen*"))


def test_dataset_writer_shards_load_with_load_from_disk(tmp_path):
    from datasets import load_from_disk

    summary, _ = run_label(tmp_path, [pair(i) for i in range(4)])
    first = load_from_disk(str(tmp_path / "out" / "dataset"))
    writer = DatasetWriter(RunFolder(tmp_path / "copy"), "dataset", pairwise_features(), rows_per_shard=3)
    writer.write(first.to_list())
    assert writer.close() == 4
    copy = load_from_disk(str(tmp_path / "copy" / "dataset"))
    assert len(list((tmp_path / "copy" / "dataset").glob("*.arrow"))) == 2
    assert copy.to_list() == first.to_list() and copy.features == pairwise_features()


def test_shards_split_an_input_into_disjoint_parts_by_content(tmp_path):
    items = [pair(i) for i in range(30)]
    parts = [[p for p in items if in_shard(p, (i, 3))] for i in range(3)]
    assert sorted(p.id for part in parts for p in part) == sorted(p.id for p in items)
    assert all(parts)
    summary, _ = run_label(tmp_path, items, shard=(1, 3))
    assert summary["pairs"] == len(parts[1]) and summary["pairs_in_other_shards"] == 30 - len(parts[1])


def test_the_instant_backend_is_a_backend_kind(tmp_path):
    from rlaif.backends import BackendPool

    spec = JudgeConfig(name="instant", backend=FakeBackendConfig(kind="fake"),
                       principles=PrincipleSelection(mode="fixed", ids=["helpfulness"]))
    with BackendPool() as pool:
        summary = label_stage([pair(i) for i in range(5)], spec, pool, RunFolder(tmp_path), progress=False)
    assert summary["labeled"] == 5 and summary["backend_stats"]["requests"] == 10


def test_json_lines_are_plain_json_with_infinities_as_json_dumps_writes_them():
    from rlaif.store.runfolder import json_line

    row = {"text": "ünïcode — <|im_end|>", "logprobs": {"A": -0.25, "B": float("-inf")}, "none": None, "n": [1, 2.5]}
    line = json_line(row)
    assert line.endswith("\n") and "\n" not in line[:-1] and "ünïcode" in line
    assert json.loads(line) == json.loads(json.dumps(row))


def test_a_copied_pair_with_new_texts_has_its_own_key():
    original = pair(1)
    key = original.key  # computed once and remembered
    changed = original.model_copy(update={"response_1": original.response_1 + " more"})
    assert changed.key != key
    assert changed.key == CandidatePair(**{**original.model_dump(), "response_1": original.response_1 + " more"}).key
    assert original.model_copy().key == key == CandidatePair(**original.model_dump()).key


def test_fewer_gc_passes_restores_the_collector():
    import gc

    from rlaif.stages.label import fewer_gc_passes

    before = gc.get_threshold()
    with fewer_gc_passes(threshold=12345):
        assert gc.get_threshold()[0] == 12345 and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
