"""A user's mistakes, driven through the CLI: each ends in one line saying what to do, and exit status 2
(the traceback only with --verbose); run folders and preference files are taken where a dataset is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.cli import main


def _pairs_file(path: Path, n: int = 40) -> Path:
    rows = [{"id": f"p{i}", "prompt": f"Question {i}?", "response_1": f"yes {i}", "response_2": f"no {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fails_in_one_line(argv: list[str], capsys, *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    last = err[-1]
    assert last.startswith("rlaif"), err
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def test_missing_dataset_folder(tmp_path, capsys):
    line = _fails_in_one_line(["train", "rm", "--dataset", str(tmp_path / "MISSING_DIR"), "--out", str(tmp_path / "rm")],
                              capsys, "MISSING_DIR does not exist", "dataset/ folder")
    assert "Traceback" not in line


def test_traceback_only_with_verbose(tmp_path, capsys):
    argv = ["train", "dpo", "--dataset", str(tmp_path / "MISSING_DIR"), "--out", str(tmp_path / "dpo")]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main([*argv, "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("rlaif train: error:")


def test_interval_width_out_of_range(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["humans", "size", "--width", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1
    assert "--width: must be in (0, 1], got 2" in err[0] and "rlaif humans --help" in err[0]


@pytest.mark.parametrize("command", [["label", "--pairs", "PAIRS"], ["audit", "--gold", "PAIRS"],
                                     ["train", "rm", "--dataset", "PAIRS"], ["hygiene"]])
def test_out_naming_an_existing_file(tmp_path, capsys, command):
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 2)
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    argv = [str(pairs) if a == "PAIRS" else a for a in command]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", str(taken)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "is a file; give a folder" in err[0]
    assert taken.read_text() == "mine"


def test_score_given_a_pairs_file(tmp_path, capsys):
    pairs = _pairs_file(tmp_path / "pairs.jsonl")
    out = tmp_path / "score"
    _fails_in_one_line(["score", "--samples", str(pairs), "--out", str(out), "--quiet"], capsys,
                       "has no usable row (40 invalid", "{id, prompt, response} rows")
    assert not (out / "dataset").exists(), "no empty outputs are written for an input with no valid row"


def test_label_rank_and_revise_refuse_inputs_without_a_valid_row(tmp_path, capsys, monkeypatch):
    """Refused before any engine starts: the user waits for no model load to learn the file is wrong."""
    def no_engine(config):
        raise AssertionError("a backend was opened before the input was checked")

    monkeypatch.setattr("rlaif.backends.pool.open_backend", no_engine)
    wrong = tmp_path / "scores.jsonl"
    wrong.write_text("".join(json.dumps({"id": f"r{i}", "text": "x"}) + "\n" for i in range(3)))
    _fails_in_one_line(["label", "--pairs", str(wrong), "--out", str(tmp_path / "l")], capsys, "no usable row (3 invalid")
    _fails_in_one_line(["rank", "--candidates", str(wrong), "--out", str(tmp_path / "r")], capsys, "no usable row (3 invalid")
    _fails_in_one_line(["revise", "--samples", str(wrong), "--out", str(tmp_path / "v")], capsys, "no usable row (3 invalid")
    _fails_in_one_line(["label", "--pairs", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "l")], capsys, "cannot read")


def test_humans_import_that_keeps_no_row(tmp_path, capsys):
    rows = [{"id": f"p{i}", "prompt": "Q?", "response_a": "a", "response_b": "b", "human_label": ""} for i in range(40)]
    annotations = tmp_path / "annotate.jsonl"
    annotations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gold = tmp_path / "gold.jsonl"
    _fails_in_one_line(["humans", "import", "--annotations", str(annotations), "--out", str(gold)], capsys,
                       "none of its 40 rows has a human label", "fill in human_label")
    assert not gold.exists()


def test_load_preferences_takes_what_users_point_at(tmp_path):
    from datasets import Dataset

    from rlaif.errors import InputError
    from rlaif.store.datasets import load_preferences

    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(3)]
    label_run, revise_run = tmp_path / "label-run", tmp_path / "revise-run"
    for run, saved in ((label_run, "dataset"), (revise_run, "preferences")):
        Dataset.from_list(rows).save_to_disk(str(run / saved))
        (run / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for where in (label_run, label_run / "dataset", label_run / "preferences.jsonl", revise_run,
                  revise_run / "preferences.jsonl", plain):
        assert load_preferences(where)["prompt"] == Dataset.from_list(rows)["prompt"], where
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(InputError, match="holds no preference dataset"):
        load_preferences(tmp_path / "empty-run")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(InputError, match="lack"):
        load_preferences(bad)


def test_train_dpo_takes_a_run_folder_and_its_preferences_file(tmp_path, capsys):
    """The run folder (as `audit --labels` and `humans sample --run` accept) and its preferences.jsonl both train."""
    from datasets import Dataset

    from rlaif.train.tiny import build_tiny_llama

    tiny = build_tiny_llama(tmp_path / "tiny")
    run = tmp_path / "label-run"
    rows = [{"prompt": [{"role": "user", "content": f"Say {i}."}], "chosen": [{"role": "assistant", "content": f"{i}"}],
             "rejected": [{"role": "assistant", "content": "no"}], "pair_id": f"p{i}", "probability": 0.8,
             "orders_agree": True} for i in range(4)]
    Dataset.from_list(rows).save_to_disk(str(run / "dataset"))
    (run / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(f"policy_model: {tiny}\ntrainer_args: {{max_steps: 1, per_device_train_batch_size: 2, "
                   "report_to: none}\n")
    for dataset in (run, run / "preferences.jsonl"):
        out = tmp_path / f"dpo-{dataset.name}"
        assert main(["train", "dpo", "--dataset", str(dataset), "--config", str(cfg), "--out", str(out)]) == 0
        assert json.loads((out / "metrics.json").read_text())["n_kept"] == 4


# Every option that names a file or folder to read, with the other required options filled in. BAD is replaced
# by a path that does not exist, then by a folder (or, for options that read a folder, by a plain file).
_PATH_OPTIONS = {
    "label --pairs": ["label", "--pairs", "BAD"],
    "label --judge": ["label", "--pairs", "PAIRS", "--judge", "BAD"],
    "score --samples": ["score", "--samples", "BAD"],
    "score --judge": ["score", "--samples", "SAMPLES", "--judge", "BAD"],
    "rank --candidates": ["rank", "--candidates", "BAD"],
    "rank --judge": ["rank", "--candidates", "CANDIDATES", "--judge", "BAD"],
    "revise --samples": ["revise", "--samples", "BAD"],
    "revise --config": ["revise", "--config", "BAD"],
    "generate --config": ["generate", "--config", "BAD"],
    "run --config": ["run", "--config", "BAD"],
    "loop --config": ["loop", "--config", "BAD"],
    "merge RUN": ["merge", "BAD", "BAD"],
    "audit --gold": ["audit", "--gold", "BAD"],
    "audit --mapping": ["audit", "--gold", "PAIRS", "--mapping", "BAD"],
    "audit --judge": ["audit", "--gold", "GOLD", "--judge", "BAD"],
    "audit --labels": ["audit", "--gold", "GOLD", "--labels", "BAD"],
    "audit --baseline": ["audit", "--gold", "GOLD", "--labels", "LABELS", "--baseline", "BAD"],
    "audit compare": ["audit", "compare", "BAD", "BAD"],
    "humans sample --run": ["humans", "sample", "--run", "BAD"],
    "humans import --annotations": ["humans", "import", "--annotations", "BAD"],
    "humans import --out": ["humans", "import", "--annotations", "GOLD", "--out", "BAD"],
    "hygiene --judge": ["hygiene", "--judge", "BAD"],
    "hygiene --set": ["hygiene", "--set", "BAD"],
    "hygiene --injections": ["hygiene", "--injections", "BAD"],
    "train rm --dataset": ["train", "rm", "--dataset", "BAD"],
    "train rm --config": ["train", "rm", "--dataset", "PREFS", "--config", "BAD"],
    "train dpo --config": ["train", "dpo", "--dataset", "PREFS", "--config", "BAD"],
    "train ppo --reward-model": ["train", "ppo", "--reward-model", "BAD"],
    "train ppo --prompts": ["train", "ppo", "--reward-model", "LABELS", "--prompts", "BAD"],
    "train grpo --judge": ["train", "grpo", "--judge", "BAD"],
    "serve --keys-file": ["serve", "--keys-file", "BAD"],
    "serve --judge": ["serve", "--judge", "BAD"],
    "validate": ["validate", "BAD"],
}
_WRITES = {"humans import --out"}  # only a folder is wrong there
_READS_A_FOLDER = {"merge RUN", "audit --labels", "humans sample --run", "train ppo --reward-model"}


@pytest.fixture
def no_engines(monkeypatch):
    """Nothing may start: a path mistake must be caught before any engine, trainer or server."""
    def refuse(*args, **kwargs):
        raise AssertionError("started work before the path was checked")
    monkeypatch.setattr("rlaif.backends.pool.open_backend", refuse)
    monkeypatch.setattr("uvicorn.run", refuse)


@pytest.mark.parametrize("kind", ["missing", "wrong-kind"])
@pytest.mark.parametrize("option", sorted(_PATH_OPTIONS))
def test_every_path_option_fails_in_one_line(tmp_path, capsys, no_engines, option, kind):
    pairs = _pairs_file(tmp_path / "pairs.jsonl", 3)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": f"s{i}", "prompt": "Q?", "response": "A."}) + "\n" for i in range(3)))
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(json.dumps({"prompt_id": "q", "prompt": "Q?", "responses": ["a", "b", "c"]}) + "\n")
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": f"g{i}", "prompt": "Q?", "response_a": "a", "response_b": "b",
                                        "label": "A"}) + "\n" for i in range(3)))
    labels = tmp_path / "label-run"
    labels.mkdir()
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "Q?", "chosen": "a", "rejected": "b"}) + "\n")
    if kind == "missing" and option in _WRITES:
        return
    if kind == "missing":
        bad = tmp_path / "NOT_THERE.jsonl"
    elif option in _READS_A_FOLDER:
        bad = tmp_path / "A_FILE.txt"
        bad.write_text("not a folder\n")
    else:
        bad = tmp_path / "A_FOLDER"
        bad.mkdir()
    fills = {"BAD": bad, "PAIRS": pairs, "SAMPLES": samples, "CANDIDATES": candidates, "GOLD": gold, "LABELS": labels,
             "PREFS": prefs}
    argv = [str(fills.get(a, a)) for a in _PATH_OPTIONS[option]]
    if argv[0] not in ("validate", "serve", "humans"):
        argv += ["--out", str(tmp_path / "out")]
    try:
        code = main([*argv, "--quiet"])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (option, kind, err[-5:])
    assert err and err[-1].startswith("rlaif") and bad.name in err[-1], (option, kind, err[-5:])
    assert not any("Traceback" in line for line in err), (option, kind, err[-5:])
