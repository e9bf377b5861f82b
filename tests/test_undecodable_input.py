"""A line that is not valid UTF-8 (a stray \\xff) in any input a user gives: that line becomes an invalid row with its
line number and the reason, and everything else is read and labeled as usual (the instant fake judge)."""

from __future__ import annotations

import json
from pathlib import Path

from rlaif.cli import main

PAIRWISE = "name: instant\ndescription: fake\nbackend: {kind: fake}\nprinciples: {mode: fixed, ids: [helpfulness]}\n"
POINTWISE = ("name: instant-pointwise\ndescription: fake\nmode: pointwise\nbackend: {kind: fake}\n"
             "template: judge/pointwise.jinja\nprinciples: {mode: fixed, ids: [helpfulness]}\n")
BAD_LINE = b'{"id": "bad", "prompt": "caf\xff?", "response_1": "a", "response_2": "b"}\n'


def _jsonl_with_a_bad_line(path: Path, rows: list[dict], bad: bytes, at: int = 2) -> Path:
    lines = [json.dumps(r).encode() + b"\n" for r in rows]
    lines.insert(at, bad)
    path.write_bytes(b"".join(lines))
    return path


def _invalid(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "invalid_rows.jsonl").read_text(encoding="utf-8").splitlines()]


def test_label_pairs(tmp_path, capsys):
    judge = tmp_path / "judge.yaml"
    judge.write_text(PAIRWISE)
    rows = [{"id": f"p{i}", "prompt": f"Q {i}?", "response_1": f"yes {i}", "response_2": "no"} for i in range(6)]
    pairs = _jsonl_with_a_bad_line(tmp_path / "pairs.jsonl", rows, BAD_LINE)
    assert main(["label", "--pairs", str(pairs), "--judge", str(judge), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (bad,) = _invalid(tmp_path / "run")
    assert bad["line"] == 3 and bad["error"] == "not valid UTF-8 (byte 0xff at character 29)" and "\\xff" in bad["raw"]
    counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]
    assert counts["pairs"] == 6 and counts["labeled"] + counts["unlabeled"] == 6 and counts["invalid_rows"] == 1
    assert "skipping" in capsys.readouterr().err


def test_score_samples(tmp_path):
    judge = tmp_path / "judge.yaml"
    judge.write_text(POINTWISE)
    rows = [{"id": f"s{i}", "prompt": f"Q {i}?", "response": f"answer {i}"} for i in range(5)]
    samples = _jsonl_with_a_bad_line(tmp_path / "samples.jsonl", rows, b'{"id": "bad", "prompt": "Q", "response": "\xfe"}\n', 0)
    assert main(["score", "--samples", str(samples), "--judge", str(judge), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    (bad,) = _invalid(tmp_path / "run")
    assert bad["line"] == 1 and bad["error"].startswith("not valid UTF-8 (byte 0xfe")
    counts = json.loads((tmp_path / "run" / "manifest.json").read_text())["counts"]
    assert counts["invalid_rows"] == 1 and counts["responses"] == 5, counts


def _gold_rows(n: int) -> list[dict]:
    return [{"id": f"g{i}", "prompt": f"Q {i}?", "response_a": "a", "response_b": f"b {i}", "label": "AB"[i % 2]}
            for i in range(n)]


def test_audit_gold_jsonl_and_json_list(tmp_path):
    from rlaif.audit.gold import load_gold

    gold = _jsonl_with_a_bad_line(tmp_path / "gold.jsonl", _gold_rows(8),
                                  b'{"id": "bad", "prompt": "\xc3(", "response_a": "a", "response_b": "b", "label": "A"}\n', 4)
    items, bad = load_gold(gold)
    assert len(items) == 8 and [(b.line, b.error) for b in bad] == [(5, "not valid UTF-8 (byte 0xc3 at character 26)")]
    listed = tmp_path / "gold.json"
    text = json.dumps(_gold_rows(4), ensure_ascii=False).encode()
    listed.write_bytes(text.replace(b'"Q 2?"', b'"Q \xff?"'))
    items, bad = load_gold(listed)
    assert [i.id for i in items] == ["g0", "g1", "g3"] and len(bad) == 1 and "not valid UTF-8 (byte 0xff" in bad[0].error
    judge = tmp_path / "judge.yaml"
    judge.write_text(PAIRWISE)
    out = tmp_path / "audit"
    assert main(["audit", "--gold", str(gold), "--judge", str(judge), "--out", str(out), "--bootstrap", "50",
                 "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_gold"] == 8


def test_humans_import_csv_and_jsonl(tmp_path):
    from rlaif.audit.gold import load_gold

    header = b"id,prompt,response_a,response_b,human_label\n"
    body = b"".join(f"p{i},Q {i}?,a,b,A\n".encode() for i in range(3))
    csv_file = tmp_path / "annotate.csv"
    csv_file.write_bytes(header + body + b"p9,Q \xff,a,b,B\n")
    gold = tmp_path / "gold.jsonl"
    assert main(["humans", "import", "--annotations", str(csv_file), "--out", str(gold)]) == 0
    items, bad = load_gold(gold)
    assert [i.id for i in items] == ["p0", "p1", "p2"] and not bad
    rows = [{"id": f"p{i}", "prompt": "Q?", "response_a": "a", "response_b": "b", "human_label": "B"} for i in range(3)]
    jsonl = _jsonl_with_a_bad_line(tmp_path / "annotate.jsonl", rows, b'{"id": "x", "human_label": "\x80"}\n', 1)
    from rlaif.audit.sampling import import_annotation

    items, errors = import_annotation(jsonl)
    assert len(items) == 3 and [(e.line, e.error) for e in errors] == [(2, "not valid UTF-8 (byte 0x80 at character 29)")]
    items, errors = import_annotation(csv_file)
    assert [(e.line, e.error) for e in errors] == [(5, "not valid UTF-8 (byte 0xff at character 3) in column prompt")]
