"""How two audits are paired: `rlaif audit compare` counts the items only one judge judged once each, and gold
ids and fingerprints depend on the items' content and the mapping, never on the gold file's name or place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fakes import MARKER, fake, prefers_marker

from rlaif import cli
from rlaif.audit.compare import compare_audits, compare_markdown
from rlaif.audit.fingerprint import gold_fingerprint
from rlaif.audit.gold import GoldMapping, load_gold
from rlaif.backends.pool import BackendPool
from rlaif.errors import InputError

N = 30


def _rows(missing: set[int]) -> list[dict]:
    """items.jsonl rows of a synthetic audit: the judge right on two items in three, nothing on the `missing` ones."""
    rows = []
    for i in range(N):
        label = "A" if i % 2 else "B"
        right = i % 3 != 0
        p = None if i in missing else (0.8 if (label == "A") == right else 0.2)
        rows.append({"id": f"g{i}", "item_sha": f"sha{i}", "cluster": f"prompt{i}", "category": ["x", "y"][i % 2],
                     "label": label, "p_a": p, "verdict": None if p is None else ("A" if p > 0.5 else "B"),
                     "len_a": 5, "len_b": 6, "reason": "not judged" if p is None else None})
    return rows


def _folder(path: Path, judge: str, missing: set[int]) -> Path:
    path.mkdir()
    fingerprint = {"judge": {"name": judge, "sha": judge}, "gold": {"sha": "gold", "n_items": N}}
    (path / "metrics.json").write_text(json.dumps({"judge": judge, "gold": "gold.jsonl", "fingerprint": fingerprint}))
    (path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(missing)))
    return path


@pytest.mark.parametrize(("missing_a", "missing_b", "only_a", "only_b"), [
    ({0}, {1}, 1, 1),     # one item missed by each judge: two items judged by only one
    ({0}, {0}, 0, 0),     # the same item missed by both: judged by neither, not "by only one"
    ({0, 1, 2}, set(), 0, 3),
])
def test_compare_counts_each_item_judged_by_only_one_once(tmp_path, missing_a, missing_b, only_a, only_b):
    result = compare_audits(_folder(tmp_path / "a", "ja", missing_a), _folder(tmp_path / "b", "jb", missing_b))
    assert result["n_paired"] == N - len(missing_a | missing_b)
    assert result["unpaired_items"] == only_a + only_b
    assert (result["judged_by_a_only"], result["judged_by_b_only"]) == (only_a, only_b)
    assert result["judged_by_neither"] == len(missing_a & missing_b)
    text = compare_markdown(result, [])
    assert f"{only_a + only_b} items were judged by only one" in text
    if only_a + only_b:
        assert f"(A alone: {only_a}, B alone: {only_b})" in text


# ---------------------------------------------------------------- gold ids: content and mapping, never the file

MAPPING = GoldMapping(prompt=["q"], response_a="x", response_b="y", label="winner", values={"left": "A", "right": "B"})


def _mapped_rows(n: int = N, with_id: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        good, bad = f"Answer {i}: {MARKER} and complete.", f"Answer {i}: vague."
        row = {"q": f"Question number {i}?", "x": good if i % 2 else bad, "y": bad if i % 2 else good,
               "winner": "left" if i % 2 else "right"}
        rows.append({"qid": f"q{i}", **row} if with_id else row)
    return rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mapped_gold_ids_and_fingerprint_do_not_depend_on_the_file(tmp_path):
    rows = _mapped_rows()
    first, _ = load_gold(_jsonl(tmp_path / "gold-v1.jsonl", rows), mapping=MAPPING)
    moved, _ = load_gold(_jsonl(tmp_path / "elsewhere" / "renamed.jsonl", rows), mapping=MAPPING)
    assert [i.id for i in first] == [i.id for i in moved] and len({i.id for i in first}) == N
    assert not any("gold-v1" in i.id for i in first)
    assert gold_fingerprint(first, "gold-v1.jsonl")["sha"] == gold_fingerprint(moved, "elsewhere/renamed.jsonl")["sha"]
    # the ids follow the content: the same rows in another order keep theirs
    shuffled, _ = load_gold(_jsonl(tmp_path / "shuffled.jsonl", rows[::-1]), mapping=MAPPING)
    assert {i.id: i.prompt for i in shuffled} == {i.id: i.prompt for i in first}
    # an id field is read as it is
    named, _ = load_gold(_jsonl(tmp_path / "named.jsonl", _mapped_rows(3, with_id=True)),
                         mapping=MAPPING.model_copy(update={"id": "qid"}))
    assert [i.id for i in named] == ["q0", "q1", "q2"]
    # the same pair twice (two rows of annotations): two items, two ids
    twice, bad = load_gold(_jsonl(tmp_path / "twice.jsonl", [rows[0], rows[0]]), mapping=MAPPING)
    assert len(twice) == 2 and twice[0].id != twice[1].id and not bad


def _audit(*args: str) -> int:
    return cli.main(["audit", "--quiet", "--bootstrap", "50", *args])


def test_renamed_gold_file_pairs_with_its_baseline(tmp_path, monkeypatch, capsys):
    backend = fake(prefers_marker())
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING.model_dump()))
    rows = _mapped_rows()
    gold = _jsonl(tmp_path / "gold-v1.jsonl", rows)
    assert _audit("--gold", str(gold), "--mapping", str(mapping), "--out", str(tmp_path / "v1")) == 0
    moved = _jsonl(tmp_path / "accepted" / "gold.jsonl", rows)
    assert _audit("--gold", str(moved), "--mapping", str(mapping), "--out", str(tmp_path / "v2"),
                  "--baseline", str(tmp_path / "v1")) == 0
    base = json.loads((tmp_path / "v2" / "metrics.json").read_text())["baseline"]
    assert base["paired"] and base["n_paired"] == N and base["changed"] == [], base
    assert "nothing changed (same judge, same gold set)" in (tmp_path / "v2" / "report.md").read_text()


def test_a_baseline_with_file_named_gold_ids_is_named_as_such(tmp_path, monkeypatch):
    """An audit written when a mapped gold file's ids began with the file's name cannot pair: the report says why."""
    backend = fake(prefers_marker())
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(MAPPING.model_dump()))
    gold = _jsonl(tmp_path / "gold-v1.jsonl", _mapped_rows())
    assert _audit("--gold", str(gold), "--mapping", str(mapping), "--out", str(tmp_path / "old")) == 0
    # rewrite it as the earlier scheme wrote it: "<file stem>-<line>" ids (so other item hashes), no id marker
    items = tmp_path / "old" / "items.jsonl"
    old_rows = [{**r, "id": f"gold-v1-{n}", "item_sha": f"old{n}"}
                for n, r in enumerate(map(json.loads, items.read_text().splitlines()), start=1)]
    items.write_text("".join(json.dumps(r) + "\n" for r in old_rows))
    metrics = json.loads((tmp_path / "old" / "metrics.json").read_text())
    metrics["fingerprint"]["gold"].pop("ids", None)
    metrics["fingerprint"]["gold"]["sha"] = "old"
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(metrics))
    assert _audit("--gold", str(gold), "--mapping", str(mapping), "--out", str(tmp_path / "new"),
                  "--baseline", str(tmp_path / "old")) == 0
    base = json.loads((tmp_path / "new" / "metrics.json").read_text())["baseline"]
    assert not base["paired"] and base["old_gold_ids"]
    assert "ids carry its gold file's name" in base["detail"] and "rerun" in base["detail"]
    with pytest.raises(InputError, match=r"old: gold ids carry its gold file's name \(gold-v1-\.\.\.\).*rerun its audit"):
        compare_audits(tmp_path / "old", tmp_path / "new")
