"""How two audits are paired: `rlaif audit compare` counts the items only one judge judged once each, and gold
ids and fingerprints depend on the items' content and the mapping, never on the gold file's name or place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif.audit.compare import compare_audits, compare_markdown

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
