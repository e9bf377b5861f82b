"""Hugging Face datasets on disk: the features of each kind of row, and the one writer.

Features are explicit so an empty dataset still has every column, and every dataset is saved as one shard
(with zero rows `datasets` writes no shard by default, and `load_from_disk` then fails). The same rows are
written beside it as JSONL.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlaif.errors import InputError
from rlaif.records import content_key
from rlaif.store.rows import DERIVED_COLUMNS
from rlaif.store.runfolder import RunFolder, json_line

__all__ = [
    "pairwise_features", "derived_features", "revision_features", "to_dataset", "build_dataset",
    "build_derived_dataset", "save_dataset", "load_preferences", "DatasetWriter", "saved_data_files",
    "arrow_file_batches", "saved_batches",
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


class DatasetWriter:
    """A dataset written as it is made: rows go in batches into Arrow shard files in the `save_to_disk` layout
    (`datasets.load_from_disk` opens the folder, memory-mapped), `rows_per_shard` rows per file, and into the
    same rows as JSONL beside it. Everything is written under temporary names and moved into place by
    `close()`, so a killed run leaves the previous dataset (or none), never half of one."""

    def __init__(self, run: RunFolder, name: str, features: Any, jsonl: str | None = None,
                 rows_per_shard: int = 100_000):
        self.run, self.name, self.features, self.rows_per_shard = run, name, features, rows_per_shard
        self.jsonl = jsonl or f"{name}.jsonl"
        self.folder = run.file(name + ".partial")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.schema = features.arrow_schema
        self.shards: list[str] = []
        self.rows = 0
        self._in_shard = 0
        self._writer: Any = None
        self._sink: Any = None
        self._lines = run.file(self.jsonl + ".tmp").open("w", encoding="utf-8")

    def _next_shard(self) -> None:
        import pyarrow as pa

        self._close_shard()
        name = f"data-{len(self.shards):05d}.arrow"
        self.shards.append(name)
        self._sink = pa.OSFile(str(self.folder / name), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        if not rows:
            return
        optional: dict[str, Any] = {"rationale": [], "spread": None, "vote_share": None} if "rationale" in self.schema.names else {}
        table = pa.Table.from_pylist([{**optional, **row} for row in rows], schema=self.schema)
        self.write_table(table, [json_line(row) for row in rows])

    def write_table(self, table: Any, lines: list[str]) -> None:
        """Rows already in Arrow form, with their JSON lines in the same order (rlaif merge copies shards this way,
        without turning them into Python rows and back)."""
        if table.num_rows != len(lines):
            raise ValueError(f"{table.num_rows} rows but {len(lines)} JSON lines")
        if not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        start = 0
        while start < table.num_rows:
            if self._writer is None or self._in_shard >= self.rows_per_shard:
                self._next_shard()
            n = min(self.rows_per_shard - self._in_shard, table.num_rows - start)
            self._writer.write_table(table.slice(start, n))
            self._lines.writelines(lines[start : start + n])
            self._in_shard += n
            self.rows += n
            start += n

    def add_files(self, files: list[Path], jsonl: Path) -> int:
        """Whole Arrow shard files of another dataset of this schema (their rows in order) and the JSONL file of the
        same rows, taken as they are: each file hard-linked as a shard of its own (copied where links cannot be
        made), the lines copied as bytes. The rows added; ValueError when the files disagree with the schema or
        with the lines. For joining datasets whose rows need no filtering (rlaif merge of runs with distinct ids)."""
        import pyarrow as pa

        self._close_shard()
        rows = 0
        for file in files:
            with pa.OSFile(str(file)) as source:
                reader = pa.ipc.open_stream(source)
                if not reader.schema.equals(self.schema):
                    raise ValueError(f"{file} has another schema than this dataset")
                in_file = sum(batch.num_rows for batch in reader)
            name = f"data-{len(self.shards):05d}.arrow"
            try:
                os.link(file, self.folder / name)
            except OSError:  # another filesystem, or one without hard links
                shutil.copyfile(file, self.folder / name)
            self.shards.append(name)
            rows += in_file
        self._lines.flush()
        lines = 0
        with jsonl.open("rb") as source, open(self._lines.fileno(), "ab", closefd=False) as sink:
            while block := source.read(1 << 20):
                sink.write(block)
                lines += block.count(b"\n")
        if lines != rows:
            raise ValueError(f"{jsonl} has {lines} lines but its dataset has {rows} rows")
        self.rows += rows
        return rows

    def close(self) -> int:
        """Finish the shards and the JSONL, write the dataset's state and info, move both into place."""
        from datasets import DatasetInfo

        if not self.shards:
            self._next_shard()  # an empty dataset still has one (empty) shard with every column
        self._close_shard()
        self._lines.close()
        total = len(self.shards)
        files = []
        for i, name in enumerate(self.shards):
            final = f"data-{i:05d}-of-{total:05d}.arrow"
            (self.folder / name).rename(self.folder / final)
            files.append({"filename": final})
        state: dict[str, Any] = {"_data_files": files, "_fingerprint": content_key(self.name, self.rows, files, time.time()),
                 "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
                 "_split": None}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(DatasetInfo(features=self.features))
        (self.folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                       encoding="utf-8")
        target = self.run.file(self.name)
        if target.exists():
            shutil.rmtree(target)
        self.folder.rename(target)
        self.run.file(self.jsonl + ".tmp").replace(self.run.file(self.jsonl))
        return self.rows


def saved_data_files(folder: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder, in order, from its state.json."""
    state = json.loads((Path(folder) / "state.json").read_text(encoding="utf-8"))
    return [Path(folder) / entry["filename"] for entry in state.get("_data_files", [])]


def arrow_file_batches(file: str | Path) -> Iterator[Any]:
    """The record batches of one Arrow file in the streaming IPC format (what `save_to_disk` and DatasetWriter
    write), read with plain reads, not memory-mapped: a pass over a large dataset holds one batch at a time and
    its resident memory stays flat."""
    import pyarrow as pa

    with pa.OSFile(str(file)) as source:
        yield from pa.ipc.open_stream(source)


def saved_batches(folder: Path) -> Iterator[Any]:
    """Every record batch of a `save_to_disk` folder, file after file (see arrow_file_batches)."""
    for file in saved_data_files(folder):
        yield from arrow_file_batches(file)


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
