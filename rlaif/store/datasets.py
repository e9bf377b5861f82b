"""Hugging Face datasets on disk: the features of each kind of row, and the one writer.

Features are explicit so an empty dataset still has every column, and every dataset is saved as one shard
(with zero rows `datasets` writes no shard by default, and `load_from_disk` then fails). The same rows are
written beside it as JSONL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlaif.errors import InputError
from rlaif.store.rows import DERIVED_COLUMNS
from rlaif.store.runfolder import RunFolder

__all__ = [
    "pairwise_features", "derived_features", "revision_features", "to_dataset", "build_dataset",
    "build_derived_dataset", "save_dataset", "load_preferences",
]


def _message_list() -> Any:
    from datasets import List, Value

    return List({"role": Value("string"), "content": Value("string")})


def _provenance(strings: tuple[str, ...] = ()) -> dict[str, Any]:
    """The judge provenance columns (rlaif.records.Provenance.columns), plus extra string columns."""
    from datasets import List, Value

    names = ("judge", "judge_model", "judge_backend", "template", "template_version", "constitution_version", *strings)
    return {**{n: Value("string") for n in names}, "principle_ids": List(Value("string"))}


def pairwise_features() -> Any:
    """Rows of `rlaif label` / `rlaif run` (rlaif.store.rows.preference_row)."""
    from datasets import Features, List, Value

    f64, i64 = Value("float64"), Value("int64")
    return Features({
        "prompt": _message_list(), "chosen": _message_list(), "rejected": _message_list(), "pair_id": Value("string"),
        **_provenance(), "probability": f64, "p_response_1": f64, "orders_agree": Value("bool"),
        "chosen_is_response_1": Value("bool"), "per_principle_p": List(f64), "raw_verdicts": Value("string"),
        "prompt_tokens": i64, "completion_tokens": i64, "cost_usd": f64, "latency_s": f64,
        "rationale": List({"judge": Value("string"), "principle_id": Value("string"), "order": Value("string"),
                           "sample": i64, "text": Value("string")}),
        "spread": f64, "vote_share": f64,
    })


def derived_features() -> Any:
    """Rows derived from pointwise scores (`rlaif score`) or a Bradley-Terry ranking (`rlaif rank`)."""
    from datasets import Features, Value

    f64, i64 = Value("float64"), Value("int64")
    features = {
        "prompt": _message_list(), "chosen": _message_list(), "rejected": _message_list(),
        **_provenance(("pair_id", "source", "chosen_id", "rejected_id", "provenance")), "probability": f64,
        "orders_agree": Value("bool"), "chosen_score": f64, "rejected_score": f64, "comparisons": i64,
        "prompt_tokens": i64, "completion_tokens": i64, "cost_usd": f64,
    }
    return Features({name: features[name] for name in ["prompt", "chosen", "rejected", *DERIVED_COLUMNS]})


def revision_features(text_columns: tuple[str, ...]) -> Any:
    """Rows of `rlaif revise`: SFT (prompt, completion) or preferences (prompt, chosen, rejected)."""
    from datasets import Features, List, Value

    strings = ("item_id", "policy_model", "policy_backend", "critique_template_version", "revision_template_version",
               "constitution_version")
    return Features({**{c: _message_list() for c in text_columns}, **{s: Value("string") for s in strings},
                     "principle_ids": List(Value("string")), "rounds": Value("int64"),
                     "revisions_accepted": Value("int64")})


def to_dataset(rows: list[dict], features: Any) -> Any:
    """A `datasets.Dataset` with exactly these features (an empty one still has every column)."""
    from datasets import Dataset

    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)


def build_dataset(rows: list[dict]) -> Any:
    """A `datasets.Dataset` of pairwise preference rows; rows written before the rationale, spread and
    vote_share columns existed (older preferences.jsonl) get them empty."""
    optional: dict[str, Any] = {"rationale": [], "spread": None, "vote_share": None}
    return to_dataset([{**optional, **row} for row in rows], pairwise_features())


def build_derived_dataset(rows: list[dict]) -> Any:
    """A `datasets.Dataset` of derived preference rows (`source` is "pointwise" or "ranking")."""
    return to_dataset(rows, derived_features())


def save_dataset(run: RunFolder, name: str, dataset: Any, rows: list[dict], jsonl: str | None = None) -> None:
    """`run/name/` (datasets.load_from_disk, one shard) and the same rows as `run/{jsonl or name + '.jsonl'}`."""
    dataset.save_to_disk(str(run.file(name)), num_shards=1)
    run.write_jsonl(jsonl or f"{name}.jsonl", rows)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file()


def _saved_beside(path: Path) -> Path | None:
    """The saved dataset a run folder (or its preferences.jsonl) holds: dataset/ (label, run, score, rank) or
    preferences/ (revise)."""
    folder = path if path.is_dir() else path.parent
    if path.is_file() and path.name != "preferences.jsonl":
        return None
    return next((folder / name for name in ("dataset", "preferences") if _is_saved_dataset(folder / name)), None)


def load_preferences(path: Path) -> Any:
    """A preference dataset from what a user may point at: a saved dataset folder, the run folder that holds one,
    its preferences.jsonl, or any JSONL file of prompt/chosen/rejected rows."""
    from datasets import Dataset, load_from_disk

    if not path.exists():
        raise InputError(f"{path} does not exist: pass the dataset/ folder of a `rlaif label` or `rlaif run` folder "
                         "(or the run folder itself)")
    saved = path if _is_saved_dataset(path) else _saved_beside(path)
    if saved is not None:
        return load_from_disk(str(saved))
    if path.is_dir():
        raise InputError(f"{path} holds no preference dataset (no dataset/ or preferences/ folder in it): pass the "
                         "folder `rlaif label`, `run`, `score`, `rank` or `revise` wrote")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise InputError(f"{path} has no rows")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in rows[0]]
    if missing:
        raise InputError(f"{path} rows lack {missing}: a preference file has prompt, chosen and rejected")
    return Dataset.from_list(rows)
