"""Human gold sets in one documented format, and importers for the formats found in the wild.

Canonical gold JSONL, one object per line:

    {"id": "g1", "prompt": "...", "response_a": "...", "response_b": "...",
     "label": "A" | "B" | "tie",                 # the gold (majority) label
     "annotators": ["A", "A", "tie"],            # optional: each human's label
     "category": "coding"}                       # optional: for per-category breakdowns

Importers: `pandalm` (PandaLM testset JSON), `llmbar` (LLMBar JSON), `canonical`, and `mapped` for any
other JSON/JSONL file through a column mapping (`GoldMapping`). Each bad row becomes a RowError with
its line (or list index) and reason; the good rows are kept. An item's id depends on the row and the mapping,
never on the file's name or place (see `_mapped`), so audits of a renamed gold file pair with the earlier ones.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rlaif.errors import InputError
from rlaif.records import content_key
from rlaif.store.runfolder import RowError, not_utf8, open_text

__all__ = ["GoldItem", "GoldMapping", "load_gold", "majority", "human_gold", "FORMATS"]

Label = Literal["A", "B", "tie"]
FORMATS = ("auto", "canonical", "pandalm", "llmbar", "mapped")


class GoldItem(BaseModel):
    """One human-labelled pairwise comparison."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    prompt: str
    response_a: str
    response_b: str
    label: Label
    annotators: list[Label] = Field(default_factory=list)
    category: str | None = None
    """Responses may be empty (an empty answer is something humans judge too); id and prompt may not."""

    @field_validator("id", "prompt")
    @classmethod
    def _non_blank(cls, value: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        return value


_DEFAULT_VALUES: dict[str, Label] = {"A": "A", "B": "B", "tie": "tie"}


class GoldMapping(BaseModel):
    """How to read another file: which field holds what, and which values mean A, B and tie."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    """Field holding the id (read as it is); None: a hash of the mapped prompt and responses."""
    prompt: list[str] = Field(min_length=1)
    """Field(s) joined with a blank line into the prompt (e.g. instruction + input)."""
    response_a: str
    response_b: str
    label: str | None = None
    """Field holding the gold label; None takes the majority of `annotators`."""
    annotators: list[str] = Field(default_factory=list)
    category: str | None = None
    values: dict[str, Label] = Field(default_factory=lambda: dict(_DEFAULT_VALUES))
    """Raw label value (as a string) -> A/B/tie."""


PANDALM = GoldMapping(
    id="idx", prompt=["instruction", "input"], response_a="response1", response_b="response2",
    annotators=["annotator1", "annotator2", "annotator3"], category="motivation_app",
    values={"1": "A", "2": "B", "0": "tie"},
)
LLMBAR = GoldMapping(prompt=["input"], response_a="output_1", response_b="output_2", label="label",
                     values={"1": "A", "2": "B"})


def majority(labels: list[str]) -> str:
    """The most common label; a tie between the top labels is a 'tie'."""
    counts = Counter(labels).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "tie"
    return counts[0][0]


def human_gold(id: str, prompt: str, response_a: str, response_b: str, labels: list[str]) -> GoldItem:
    """A gold item from the human labels one pair got: the majority label, and each annotator's label when there
    was more than one."""
    return GoldItem.model_validate({"id": id, "prompt": prompt, "response_a": response_a, "response_b": response_b,
                                    "label": majority(labels), "annotators": labels if len(labels) > 1 else []})


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line or index, object) from a JSON list or a JSONL file; unparseable lines, and the lines or items that hold
    a byte that is not UTF-8, come back as exceptions."""
    try:
        with open_text(path) as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read gold file {path}: {exc}") from exc
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from exc
        return [(i, _undecodable(json.dumps(item, ensure_ascii=False)) or item) for i, item in enumerate(items)]
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, _undecodable(line) or json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((number, ValueError(f"not valid JSON: {exc.msg}")))
    return rows


def _undecodable(text: str) -> ValueError | None:
    reason = not_utf8(text)
    return ValueError(reason) if reason else None


def _label(raw: Any, mapping: GoldMapping, field: str) -> str:
    key = str(raw)
    if key not in mapping.values:
        raise ValueError(f"{field}: label value {raw!r} is not one of {sorted(mapping.values)}")
    return mapping.values[key]


def _field(row: dict, name: str) -> Any:
    if name not in row:
        raise ValueError(f"missing field {name!r}")
    return row[name]


def _mapped(row: dict, index: int, mapping: GoldMapping, prefix: str | None) -> GoldItem:
    """One row through a mapping. Its id: a built-in format's name and the row's id (or its index in the file);
    through a user's mapping, the id field's value as it is, or without one a hash of the mapped prompt and
    responses. Never the file's name: a renamed or moved gold file keeps its ids, and pairs with its audits."""
    prompt_parts = [str(_field(row, f)).strip() for f in mapping.prompt]
    annotators = [_label(_field(row, f), mapping, f) for f in mapping.annotators]
    if mapping.label:
        label = _label(_field(row, mapping.label), mapping, mapping.label)
    elif annotators:
        label = majority(annotators)
    else:
        raise ValueError("the mapping names neither a label field nor annotator fields")
    prompt = "\n\n".join(p for p in prompt_parts if p)
    response_a, response_b = _field(row, mapping.response_a), _field(row, mapping.response_b)
    own = str(_field(row, mapping.id)) if mapping.id else None
    if prefix:
        ident = f"{prefix}-{own if own is not None else index}"
    else:
        ident = own if own is not None else content_key(prompt, response_a, response_b)
    return GoldItem(
        id=ident, prompt=prompt, response_a=response_a, response_b=response_b, label=label, annotators=annotators,
        category=str(row[mapping.category]) if mapping.category and row.get(mapping.category) is not None else None,
    )


def _number_repeats(items: list[GoldItem]) -> list[GoldItem]:
    """Content-hash ids of the same pair seen again (two rows of annotations of one pair): "<hash>-2", "-3", ..."""
    seen: Counter[str] = Counter()
    out = []
    for item in items:
        seen[item.id] += 1
        out.append(item if seen[item.id] == 1 else item.model_copy(update={"id": f"{item.id}-{seen[item.id]}"}))
    return out


def _detect(path: Path, first: Any) -> str:
    if isinstance(first, dict):
        if {"response1", "annotator1"} <= first.keys():
            return "pandalm"
        if {"output_1", "output_2", "label"} <= first.keys():
            return "llmbar"
        if {"response_a", "response_b", "label"} <= first.keys():
            return "canonical"
    raise InputError(f"{path}: cannot tell the gold format; pass --format (one of {', '.join(FORMATS[1:])}) "
                     "or a --mapping file for other formats")


def load_gold(path: str | Path, fmt: str = "auto", mapping: GoldMapping | None = None) -> tuple[list[GoldItem], list[RowError]]:
    """Read a gold file into canonical items; bad rows are returned as RowErrors, never dropped silently."""
    path = Path(path)
    rows = _read_records(path)
    if fmt == "auto":
        fmt = "mapped" if mapping else _detect(path, next((r for _, r in rows if isinstance(r, dict)), None))
    chosen = {"pandalm": PANDALM, "llmbar": LLMBAR, "mapped": mapping}.get(fmt)
    if fmt == "mapped" and mapping is None:
        raise InputError("format 'mapped' needs a mapping")
    items, errors = [], []
    for where, row in rows:
        try:
            if isinstance(row, Exception):
                raise row
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            source = fmt if fmt != "mapped" else None  # a user's mapping: ids from the content, never the file name
            items.append(GoldItem.model_validate(row) if fmt == "canonical" else _mapped(row, where, chosen, source))  # type: ignore[arg-type]
        except (ValueError, ValidationError) as exc:
            if isinstance(exc, ValidationError):
                message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            else:
                message = str(exc)
            errors.append(RowError(file=str(path), line=where, error=message, raw=json.dumps(row, default=str)[:300]))
    if fmt == "mapped" and mapping is not None and not mapping.id:
        items = _number_repeats(items)
    seen = Counter(item.id for item in items)
    dupes = {k for k, v in seen.items() if v > 1}
    if dupes:
        raise InputError(f"{path}: duplicate gold ids {sorted(dupes)[:5]}; ids must be unique")
    return items, errors
