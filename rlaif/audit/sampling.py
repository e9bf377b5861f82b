"""Which bulk-labeled items to send to human annotators, and bringing their answers back as gold.

Strategies: `uniform` (a seeded random sample), `stratified` (proportional over judge-confidence bins x
principle, every non-empty stratum represented while n allows), `least-confident` (closest to 0.5 first).
The annotation file is blind: it holds the texts and an empty `human_label`, never the judge's verdict.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from rlaif.audit.gold import GoldItem, human_gold
from rlaif.errors import InputError
from rlaif.store.runfolder import RowError, RunFolder, not_utf8, open_text, shown

__all__ = ["Candidate", "labeled_candidates", "select", "export_annotation", "import_annotation", "STRATEGIES"]

STRATEGIES = ("uniform", "stratified", "least-confident")
_HUMAN = {"a": "A", "1": "A", "b": "B", "2": "B", "tie": "tie", "0": "tie", "t": "tie"}


class Candidate(BaseModel):
    """A bulk-labeled pair as the sampler sees it."""

    pair_id: str
    prompt: str
    response_1: str
    response_2: str
    p_response_1: float
    principle: str

    @property
    def confidence(self) -> float:
        return max(self.p_response_1, 1 - self.p_response_1)


def labeled_candidates(run_dir: str | Path) -> list[Candidate]:
    """The labeled pairs of a `rlaif label` / `rlaif run` folder (from preferences.jsonl)."""
    path = RunFolder(run_dir).file("preferences.jsonl")
    if not path.is_file():
        raise InputError(f"{run_dir} has no preferences.jsonl: point --run at a folder written by `rlaif label` or `rlaif run`")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        first, second = (chosen, rejected) if row["chosen_is_response_1"] else (rejected, chosen)
        out.append(Candidate(pair_id=row["pair_id"], prompt=row["prompt"][-1]["content"], response_1=first, response_2=second,
                             p_response_1=row["p_response_1"], principle="+".join(row["principle_ids"])))
    return out


def _stratified(items: list[Candidate], n: int, rng: random.Random, bins: int = 5) -> list[Candidate]:
    strata: dict[tuple, list[Candidate]] = defaultdict(list)
    for item in items:
        strata[(min(int((item.confidence - 0.5) * 2 * bins), bins - 1), item.principle)].append(item)
    keys = sorted(strata)
    quota = {k: min(len(strata[k]), 1) if n >= len(keys) else 0 for k in keys}
    remaining = n - sum(quota.values())
    shares = {k: remaining * len(strata[k]) / len(items) for k in keys}
    for k in keys:
        quota[k] = min(len(strata[k]), quota[k] + int(shares[k]))
    for k in sorted(keys, key=lambda k: -(shares[k] % 1)):  # largest remainders take what is left
        if sum(quota.values()) >= n:
            break
        if quota[k] < len(strata[k]):
            quota[k] += 1
    picked = [x for k in keys for x in rng.sample(strata[k], quota[k])]
    if len(picked) < n:  # small strata ran out: top up uniformly from the rest
        rest = [x for x in items if x not in picked]
        picked += rng.sample(rest, min(n - len(picked), len(rest)))
    return picked


def select(items: list[Candidate], n: int, strategy: str = "stratified", seed: int = 0) -> list[Candidate]:
    """n items (or all, if fewer) chosen by the strategy; deterministic for a seed."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    rng = random.Random(seed)
    n = min(n, len(items))
    if strategy == "uniform":
        return rng.sample(items, n)
    if strategy == "least-confident":
        return sorted(items, key=lambda c: (c.confidence, c.pair_id))[:n]
    return _stratified(items, n, rng)


def export_annotation(items: list[Candidate], path: str | Path) -> Path:
    """A blind annotation file (JSONL, or CSV if the name ends in .csv) with an empty human_label."""
    path = Path(path)
    rows = [{"id": c.pair_id, "prompt": c.prompt, "response_a": c.response_1, "response_b": c.response_2,
             "human_label": "", "annotator": ""} for c in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["id"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _annotation_rows(path: Path) -> list[tuple[int, dict]]:
    """(line, row) of a filled-in annotation file; a row that cannot be read carries "__error__" (a byte that is not
    UTF-8 among the reasons)."""
    if path.suffix == ".csv":
        with open_text(path) as fh:
            fh.reconfigure(newline="")
            rows = list(enumerate(csv.DictReader(fh), start=2))
        return [(n, _csv_checked(row)) for n, row in rows]
    rows = []
    with open_text(path) as fh:
        text = fh.read()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            reason = not_utf8(line)
            try:
                rows.append((number, _error_row(reason, line) if reason else json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((number, {"__error__": f"not valid JSON: {exc.msg}"}))
    return rows


def _csv_checked(row: dict) -> dict:
    """The row, or its error row when a field holds a byte that is not UTF-8 (naming the column)."""
    for name, value in row.items():
        reason = not_utf8(value) if isinstance(value, str) else None
        if reason:
            return _error_row(f"{reason} in column {name}", json.dumps(row, ensure_ascii=False))
    return row


def _error_row(reason: str, text: str) -> dict:
    """A row that cannot be read: why, and its text (a byte that is not UTF-8 shown as \\xff)."""
    return {"__error__": reason, "raw": shown(text)[:300]}


def import_annotation(path: str | Path) -> tuple[list[GoldItem], list[RowError]]:
    """Filled-in annotation rows -> canonical gold items; rows without a valid label are reported.

    Several rows with the same id (several annotators) become one item with per-annotator labels.
    """
    path = Path(path)
    grouped: dict[str, dict] = {}
    errors = []
    for line, row in _annotation_rows(path):
        label = _HUMAN.get(str(row.get("human_label", "")).strip().lower())
        if "__error__" in row or label is None:
            reason = row.get("__error__") or f"human_label {row.get('human_label')!r} is not A, B or tie (or 1, 2, 0)"
            errors.append(RowError(file=str(path), line=line, error=reason, raw=json.dumps(row)[:300]))
            continue
        entry = grouped.setdefault(row["id"], {**{k: row[k] for k in ("id", "prompt", "response_a", "response_b")}, "annotators": []})
        entry["annotators"].append(label)
    items = [human_gold(e["id"], e["prompt"], e["response_a"], e["response_b"], e["annotators"]) for e in grouped.values()]
    return items, errors
