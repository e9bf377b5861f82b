"""`rlaif label --runner ray`: Ray Data reads the pairs, judge actors (one engine each) label them, Parquet comes
back and is ingested once per key, and the local stage writes the same outputs as a local run. One local Ray (2
CPUs: conftest's ray_cluster) serves the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.records import CandidatePair, Judgment
from rlaif.stages.label import JUDGMENTS
from rlaif.stages.ray_label import RAY_FOLDER, ingest_attempts, ray_label_stage
from rlaif.store.index import JudgmentIndex, judgment_line
from rlaif.store.runfolder import RunFolder

JUDGE = """name: instant-ray
description: Ray test judge (instant fake backend; its labels judge nothing).
backend: {kind: fake}
principles: {mode: fixed, ids: [helpfulness]}
both_orders: true
"""
WORDS = "the model answer explains why a short clear reply helps users who ask about code history cooking travel".split()
OUTPUTS = ("preferences.jsonl", "unlabeled.jsonl", "invalid_rows.jsonl", JUDGMENTS)

# Ray Data's DataContext warns about its own deprecated fields when it is created (not rlaif's doing).
pytestmark = pytest.mark.filterwarnings(r"ignore:.*deprecated.*:DeprecationWarning:ray\.data\.context")


def _pair_rows(n: int) -> list[dict]:
    import random

    rng = random.Random(0)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [{"id": f"pair-{i}", "prompt": f"Question {i}: {text(10)}?", "response_1": text(25), "response_2": text(25)}
            for i in range(n)]


def _input(tmp_path: Path, n: int = 300) -> tuple[Path, list[dict]]:
    """n distinct pairs, one more repeating pair-7's texts under another id, a blank response and a torn line."""
    rows = _pair_rows(n)
    rows.insert(40, {**rows[7], "id": "same-texts-as-7"})
    rows.insert(90, {"id": "blank", "prompt": "Q?", "response_1": "   ", "response_2": "no"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "torn", "prompt": \n')
    return path, rows


def _judge(tmp_path: Path) -> Path:
    path = tmp_path / "instant-ray.yaml"
    path.write_text(JUDGE)
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _final_lines_per_key(run: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for data in _lines(run / JUDGMENTS):
        judgment = Judgment.model_validate(data)
        counts[judgment.key] = counts.get(judgment.key, 0) + judgment.final
    return counts


def test_fake_backend_on_ray_counts_dataset_and_resume(ray_cluster, tmp_path):
    from datasets import load_from_disk

    pairs, rows = _input(tmp_path)
    run = tmp_path / "out"
    summary = ray_label_stage(pairs, _judge(tmp_path), RunFolder(run), batch_size=32, actors=1, progress=False)

    valid_ids = [r["id"] for r in rows if r["id"] != "blank"]
    assert summary["runner"] == "ray" and summary["ray_actors"] == 1 and summary["ray_attempt"].startswith("attempt-")
    assert summary["pairs"] == 301 and summary["unique_pairs"] == 300 and summary["duplicate_pairs"] == 1
    assert summary["invalid_rows"] == 2  # the blank response and the torn line, found by the local output pass
    assert summary["judged_on_ray"] == summary["judged_now"] == 300 and summary["reused_from_earlier_runs"] == 0
    assert summary["labeled"] + summary["unlabeled"] == 301 and summary["labeled"] > 250
    assert "not judged" not in (run / "unlabeled.jsonl").read_text()

    dataset_ids = list(load_from_disk(str(run / "dataset"))["pair_id"])
    unlabeled_ids = [r["pair_id"] for r in _lines(run / "unlabeled.jsonl")]
    assert sorted(dataset_ids + unlabeled_ids) == sorted(valid_ids)  # every valid id has exactly one row
    assert sorted(r["pair_id"] for r in _lines(run / "preferences.jsonl")) == sorted(dataset_ids)
    by_id = {r["pair_id"]: r for r in _lines(run / "preferences.jsonl")}
    if "pair-7" in by_id:
        assert by_id["same-texts-as-7"]["probability"] == by_id["pair-7"]["probability"]
    invalid = _lines(run / "invalid_rows.jsonl")
    assert sorted(r["line"] for r in invalid) == [91, 303]

    finals = _final_lines_per_key(run)
    assert len(finals) == 300 and set(finals.values()) == {1}  # one final judgment per distinct key
    assert len(_lines(run / JUDGMENTS)) == 300
    assert not (run / RAY_FOLDER).exists(), "ingested attempt folders are removed"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runner"] == "ray" and manifest["ray"]["judged_on_ray"] == 300
    # the summary and the manifest agree with the labels written, and their rate with their seconds
    for key in ("judged_now", "reused_from_earlier_runs", "labeled", "unlabeled", "label_seconds", "labels_per_second"):
        assert manifest["counts"][key] == summary[key], key
    assert summary["label_seconds"] == pytest.approx(summary["judge_seconds"] + summary["output_seconds"], abs=0.02)
    assert summary["judge_seconds"] >= manifest["ray"]["ray_seconds"] - 0.01
    assert summary["labels_per_second"] == pytest.approx(300 / summary["label_seconds"], rel=0.01)
    # the actors' counters come back with their judgments: 2 orders for each pair an actor judged (a repeat of
    # another batch's texts is judged there too, and its judgment dropped at ingest), none failed
    stats, judged = summary["backend_stats"], 300 + manifest["ray"]["repeated_judgments_dropped"]
    assert (stats["requests"], stats["succeeded"], stats["failed"]) == (2 * judged, 2 * judged, 0)
    assert stats["prompt_tokens"] > 0
    assert manifest["backend_stats"] == stats

    before = {name: (run / name).read_text() for name in OUTPUTS}
    again = ray_label_stage(pairs, _judge(tmp_path), RunFolder(run), batch_size=32, actors=1, progress=False)
    assert again["judged_on_ray"] == again["judged_now"] == 0 and again["ray_attempt"] is None
    assert again["reused_from_earlier_runs"] == 300 and again["backend_stats"]["requests"] == 0
    assert json.loads((run / "manifest.json").read_text())["counts"]["reused_from_earlier_runs"] == 300
    assert {k: again[k] for k in ("pairs", "labeled", "unlabeled", "invalid_rows")} == \
        {k: summary[k] for k in ("pairs", "labeled", "unlabeled", "invalid_rows")}
    assert {name: (run / name).read_text() for name in OUTPUTS} == before
    assert sorted(list(load_from_disk(str(run / "dataset"))["pair_id"])) == sorted(dataset_ids)


def test_saved_dataset_input_on_ray(ray_cluster, tmp_path):
    from datasets import Dataset

    rows = _pair_rows(24)
    rows[5] = {**rows[5], "response_2": ""}
    path = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(path), num_shards=2)  # two Arrow files, read by two Ray tasks
    run = tmp_path / "out"
    summary = ray_label_stage(path, _judge(tmp_path), RunFolder(run), batch_size=8, progress=False)
    assert summary["pairs"] == 23 and summary["invalid_rows"] == 1 and summary["judged_on_ray"] == 23
    assert set(_final_lines_per_key(run).values()) == {1}


def test_cli_runner_ray_on_a_parquet_folder_uses_the_running_ray(ray_cluster, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlaif.cli import main

    rows = _pair_rows(12)
    pairs = tmp_path / "parts"
    pairs.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:5]), pairs / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[5:]), pairs / "b.parquet")
    code = main(["label", "--pairs", str(pairs), "--judge", str(_judge(tmp_path)), "--out", str(tmp_path / "out"),
                 "--runner", "ray", "--ray-actors", "1", "--batch-size", "4", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "runner: ray" in out and "judged_on_ray: 12" in out and "labeled:" in out
    assert ray_cluster.is_initialized(), "a Ray the caller started is left running"


def test_ray_options_need_the_ray_runner(tmp_path, capsys):
    from rlaif.cli import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in _pair_rows(2)))
    code = main(["label", "--pairs", str(pairs), "--out", str(tmp_path / "out"), "--ray-actors", "4"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "--ray-actors only apply to --runner ray" in last
    assert not (tmp_path / "out" / JUDGMENTS).exists()


def _attempt(run: Path, name: str, rows: list[tuple[str, bool, str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = run / RAY_FOLDER / name
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"key": [r[0] for r in rows], "final": [r[1] for r in rows], "line": [r[2] for r in rows]}),
                   folder / "part-0.parquet")


def _judgment(key: str, labeled: bool) -> tuple[str, bool, str]:
    j = Judgment(key=key, pair_id=f"id-{key}", pair_key=key, per_principle=[], p_first=0.7 if labeled else None,
                 reason=None if labeled else "no verdict: test", judge="t", model="m", backend="fake", template="x",
                 template_version="1", constitution_version="1", principle_ids=[])
    return key, j.final, judgment_line(j, keep_prompt=False)


def test_ingest_keeps_one_final_judgment_per_key_and_skips_torn_files(tmp_path):
    """Retried tasks and rerun attempts can return a key twice: only one final line is kept; an unlabeled line is
    replaced by a final one, and a torn file of a killed run is skipped and removed. No Ray needed."""
    run = RunFolder(tmp_path / "run")
    with JudgmentIndex(run.file(JUDGMENTS)) as index:
        index.append([_judgment("aa00", True), _judgment("bb00", False)])  # an earlier local run
    _attempt(run.path, "attempt-1", [_judgment("aa00", True), _judgment("bb00", True), _judgment("cc00", False)])
    _attempt(run.path, "attempt-2", [_judgment("cc00", True), _judgment("cc00", True), _judgment("dd00", False),
                                     _judgment("dd00", False)])
    torn = run.path / RAY_FOLDER / "attempt-3"
    torn.mkdir()
    (torn / "part-0.parquet").write_bytes(b"PAR1 torn by kill -9")
    counts = ingest_attempts(run)
    assert counts["unreadable_files"] == 1 and counts["files"] == 3
    lines = _lines(run.file(JUDGMENTS))
    finals = {}
    for data in lines:
        finals.setdefault(data["key"], []).append(Judgment.model_validate(data).final)
    assert finals == {"aa00": [True], "bb00": [False, True], "cc00": [False, True], "dd00": [False]}
    assert not (run.path / RAY_FOLDER).exists()
    with JudgmentIndex(run.file(JUDGMENTS)) as index:
        assert {k: f for k, (_, f) in index.lookup(["aa00", "bb00", "cc00", "dd00"]).items()} == \
            {"aa00": True, "bb00": True, "cc00": True, "dd00": False}


GOOD_BAD = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Berlin, on the Thames."),
    ("What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 7, because numbers are fun."),
    ("Name a primary colour.", "Red is a primary colour.", "Potatoes."),
    ("Say hello in Spanish.", "Hola.", "I refuse to answer that."),
]


@pytest.mark.vllm
def test_embedded_model_on_one_ray_actor_matches_the_local_engine(ray_cluster, vllm_backend, judge_config, tmp_path):
    """The real engine in a Ray actor (its own worker process, a small KV cache) labels the pairs as the session's
    local engine does, and the actor's process (with its engine) is gone when the run ends."""
    import threading

    import psutil

    from rlaif.backends import SharedBackend
    from rlaif.stages.label import label_stage

    spec = judge_config.model_copy(update={"backend": judge_config.backend.model_copy(
        update={"max_model_len": 2048, "kv_cache_gib": 0.25})})
    pairs = [CandidatePair(id=f"gb-{i}", prompt=p, response_1=a, response_2=b) for i, (p, a, b) in enumerate(GOOD_BAD)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(p.model_dump_json() + "\n" for p in pairs))

    actors: dict[int, psutil.Process] = {}
    running = threading.Event()

    def judge_workers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if "JudgeActor" in " ".join(p.info["cmdline"] or [])]

    earlier = {p.pid for p in judge_workers()}  # an earlier test's actor may still be exiting

    def watch() -> None:  # the actor's worker process, seen while it runs ("ray::MapWorker(...JudgeActor)")
        while not running.wait(0.2):
            for proc in judge_workers():
                if proc.pid not in earlier:
                    actors.setdefault(proc.pid, proc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        summary = ray_label_stage(path, spec, RunFolder(tmp_path / "ray"), batch_size=4, actors=1, progress=False)
    finally:
        running.set()
        watcher.join()
    assert summary["judged_on_ray"] == 4 and summary["pairs"] == 4
    assert len(actors) == 1, "one actor, in its own worker process"
    _, alive = psutil.wait_procs(list(actors.values()), timeout=120)
    assert not alive, "the judge actor's worker (and its engine) must exit when the Ray run ends"
    local = label_stage(pairs, spec, SharedBackend(vllm_backend), RunFolder(tmp_path / "local"), batch_size=4,
                        progress=False)
    assert (summary["labeled"], summary["unlabeled"]) == (local["labeled"], local["unlabeled"]) and local["labeled"] > 0

    on_ray = {j["key"]: Judgment.model_validate(j) for j in _lines(tmp_path / "ray" / JUDGMENTS)}
    here = {j["key"]: Judgment.model_validate(j) for j in _lines(tmp_path / "local" / JUDGMENTS)}
    assert on_ray.keys() == here.keys()
    for key, judgment in on_ray.items():
        assert (judgment.model, judgment.backend) == ("smollm2-135m-instruct", "vllm")
        assert judgment.labeled == here[key].labeled
        if judgment.labeled:
            assert judgment.p_first == pytest.approx(here[key].p_first, abs=2e-3)
