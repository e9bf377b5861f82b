"""The labeling stage on a Ray cluster (`rlaif label --runner ray`): Ray Data reads the pairs, judge actors that
each own one engine label them, and the judgments come back as Parquet; the outputs are then written here by the
local stage, so they are the same files as a local run's.

    driver: the run folder's JudgmentIndex -> the keys already final there (the done set, ray.put once)
    ray.data read (JSONL lines, Parquet files, or a save_to_disk folder's Arrow files)
      -> map_batches(_todo, tasks): validate each row into a CandidatePair, key it, drop the done keys
      -> map_batches(JudgeActor, ActorPoolStrategy(size=actors), num_gpus=per actor, batch_size)
         each actor builds the judge from the judge spec with its own BackendPool (one engine per actor)
         and returns key, final, line (the compact judgment line, prompts kept by the local sampling rule)
      -> write_parquet(RUN/ray/attempt-<timestamp>/)
    driver: ingest every Parquet file under RUN/ray/ (earlier, killed attempts too) into judgments.jsonl, only
            where the key is not final yet (a retried or repeated key never gets two final judgments); remove them
    driver: record_judgments(..., the judge's identity) writes dataset/, preferences.jsonl, unlabeled.jsonl,
            invalid_rows.jsonl and manifest.json from the judgments (no judge is built there: no engine, no GPU)

Rows that fail validation are skipped on Ray; the local output pass reads the input again and lists them in
invalid_rows.jsonl, with ids repeated across rows, as the local stage does. Rerunning with the same run folder
judges only keys that are not final yet (unlabeled pairs are tried again, ties are not), like the local stage.
The done set is held in memory by the driver and by each worker that filters rows (~100 bytes a key: 100 MB
for a million judged pairs). Every node must see the input and the run folder at the same path (a shared
filesystem): read and write tasks run anywhere on the cluster. See docs/scaling.md.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlaif.backends.base import BackendStats
from rlaif.backends.pool import BackendPool
from rlaif.config.judge import EnsembleJudgeConfig, JudgeConfig, JudgeSpec, load_judge_spec
from rlaif.errors import ConfigError
from rlaif.judging.factory import make_judge
from rlaif.judging.identity import JudgeIdentity, judge_identity
from rlaif.records import CandidatePair
from rlaif.stages.label import JUDGMENTS, LabelOptions, in_shard, keeps_prompt, record_judgments
from rlaif.stages.ray_cluster import connect, fit_actors, forget_owner, watchdog
from rlaif.store.datasets import arrow_file_batches, saved_data_files
from rlaif.store.index import JudgmentIndex, judgment_line
from rlaif.store.inputs import input_format, iter_input
from rlaif.store.runfolder import RunFolder

__all__ = ["ray_label_stage", "ingest_attempts", "JudgeActor", "RAY_FOLDER"]

RAY_FOLDER = "ray"
"""Under the run folder: one attempt-<timestamp>/ folder of Parquet files per Ray run, removed once ingested."""
_INGEST_BATCH = 2048
_PROBE = CandidatePair(id="probe", prompt="probe", response_1="one", response_2="two")
"""A fixed pair whose key the driver and the workers must agree on (same judge, template, constitution)."""


# -- the judge spec as plain data (it travels to the workers and is validated again there) ----------------------

def spec_data(spec: JudgeSpec) -> dict[str, Any]:
    """A JSON-able form of a judge spec."""
    return spec.model_dump(mode="json")


def spec_from_data(data: dict[str, Any]) -> JudgeSpec:
    """The judge spec again, validated (an ensemble has an `ensemble` section)."""
    return EnsembleJudgeConfig.model_validate(data) if "ensemble" in data else JudgeConfig.model_validate(data)


_KEYERS: dict[str, JudgeIdentity] = {}
_DONE: dict[str, frozenset[str]] = {}


def _keyer(spec: dict[str, Any], probe_key: str) -> JudgeIdentity:
    """The judge's identity, to compute keys in a worker without a backend (one per spec and worker process); it
    refuses to work if it keys the probe pair differently from the driver."""
    name = json.dumps(spec, sort_keys=True)
    if name not in _KEYERS:
        identity = judge_identity(spec_from_data(spec), "pairwise", "labeling pairs on Ray")
        _check_probe(identity, probe_key)
        _KEYERS[name] = identity
    return _KEYERS[name]


def _check_probe(identity: JudgeIdentity, probe_key: str) -> None:
    if identity.key(_PROBE) != probe_key:
        raise ConfigError("a Ray worker builds another judge than the driver from the same spec (its rlaif, templates "
                          "or constitution differ): install the same rlaif version on every node")


def _done_keys(done: Any) -> frozenset[str]:
    """The done set from its object ref (fetched once per worker process)."""
    import ray

    if not isinstance(done, ray.ObjectRef):
        return done
    name = done.hex()
    if name not in _DONE:
        _DONE.clear()
        _DONE[name] = ray.get(done)
    return _DONE[name]


# -- the Ray stages ------------------------------------------------------------------------------------------

def _rows(batch: Any, jsonl: bool) -> Iterator[Any]:
    """Input rows as parsed objects: JSONL comes as lines of text (bad JSON is skipped: the output pass lists it)."""
    if not jsonl:
        yield from batch.to_pylist()
        return
    for line in batch.column("text").to_pylist():
        try:
            yield json.loads(line)
        except (TypeError, ValueError):
            continue


def _todo(batch: Any, spec: dict[str, Any], probe_key: str, done: Any, jsonl: bool,
          shard: tuple[int, int] | None) -> Any:
    """Ray task: the rows that validate into pairs of this shard whose key is not done, as (key, pair JSON)."""
    import pyarrow as pa

    judge = _keyer(spec, probe_key)
    done_keys = _done_keys(done)
    keys, pairs = [], []
    for data in _rows(batch, jsonl):
        if not isinstance(data, dict):
            continue
        try:
            pair = CandidatePair.model_validate(data)
        except ValueError:
            continue  # the output pass reads the input again and lists the row in invalid_rows.jsonl
        key = judge.key(pair)
        if key not in done_keys and in_shard(pair, shard):
            keys.append(key)
            pairs.append(pair.model_dump_json())
    return pa.table({"key": pa.array(keys, pa.string()), "pair": pa.array(pairs, pa.string())})


_OUTPUT_SCHEMA = {"key": "string", "final": "bool", "line": "string", "stats": "string"}
"""`stats`: the actor's backend counters for the batch (BackendStats JSON) on the batch's first row, else null."""


class JudgeActor:
    """A Ray Data actor that owns one judge and its backends (one engine per actor; `num_gpus` per actor on GPU
    clusters). Called with batches of (key, pair JSON); returns (key, final, line) per distinct key judged."""

    def __init__(self, spec: dict[str, Any], probe_key: str, keep_prompts: float):
        pool = BackendPool()
        try:
            self.judge = make_judge(spec_from_data(spec), pool, "pairwise", "labeling pairs on Ray")
            _check_probe(self.judge.identity, probe_key)
        except BaseException:
            pool.close()
            raise
        self.pool: BackendPool | None = pool
        self.keep_prompts = keep_prompts

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        pairs: dict[str, CandidatePair] = {}
        for key, text in zip(batch.column("key").to_pylist(), batch.column("pair").to_pylist()):
            pairs.setdefault(key, CandidatePair.model_validate_json(text))
        before = self._stats()
        judgments = self.judge.judge(list(pairs.values())) if pairs else []
        stats = self._stats().since(before)
        return pa.table({
            "key": pa.array([j.key for j in judgments], pa.string()),
            "final": pa.array([j.final for j in judgments], pa.bool_()),
            "line": pa.array([judgment_line(j, keeps_prompt(j, self.keep_prompts)) for j in judgments], pa.string()),
            "stats": pa.array([stats.model_dump_json()] + [None] * (len(judgments) - 1) if judgments else [], pa.string()),
        })

    def _stats(self) -> BackendStats:
        return self.pool.stats() if self.pool is not None else BackendStats()

    def close(self) -> None:
        """Shut the engine down (Ray Data deletes the actor's UDF when the run ends, which calls this)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            self.pool = None
            pool.close()

    def __del__(self) -> None:
        self.close()


def _read_arrow_files(batch: Any) -> Iterator[Any]:
    """Ray task: the record batches of save_to_disk Arrow files (streaming IPC format), a table at a time."""
    import pyarrow as pa

    for file in batch.column("file").to_pylist():
        for part in arrow_file_batches(file):
            yield pa.Table.from_batches([part])


def _read(path: Path) -> tuple[Any, bool]:
    """The input as a Ray dataset, and whether its rows are JSONL lines."""
    import ray.data

    kind = input_format(path)
    if kind == "jsonl":
        return ray.data.read_text(str(path.resolve())), True
    if kind == "parquet":
        parts = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return ray.data.read_parquet([str(f.resolve()) for f in parts]), False
    files = [str(f) for f in saved_data_files(path.resolve())]
    return ray.data.from_items([{"file": f} for f in files]).map_batches(
        _read_arrow_files, batch_size=1, batch_format="pyarrow"), False


# -- ingest --------------------------------------------------------------------------------------------------

def ingest_attempts(run: RunFolder) -> dict[str, Any]:
    """Append the judgments of every Parquet file under RUN/ray/ to judgments.jsonl, only where their key is not
    final there yet (a later unlabeled line replaces an earlier run's unlabeled one; one line per key per
    ingest), then remove the attempt folders. Files a killed run left unreadable are skipped (and removed).
    `backend_stats` in the result sums the actors' counters of the batches read (the work the actors did)."""
    import pyarrow.parquet as pq

    folder = run.file(RAY_FOLDER)
    attempts = sorted(p for p in folder.glob("attempt-*") if p.is_dir()) if folder.is_dir() else []
    counts: dict[str, Any] = {"attempts": len(attempts), "files": 0, "unreadable_files": 0, "appended": 0,
                              "appended_final": 0, "skipped": 0}
    stats = BackendStats()
    journal = run.file(JUDGMENTS)
    start = journal.stat().st_size if journal.is_file() else 0
    with JudgmentIndex(journal) as index:
        for file in sorted(f for attempt in attempts for f in attempt.rglob("*.parquet")):
            counts["files"] += 1
            try:
                parquet = pq.ParquetFile(file)
                columns = [c for c in _OUTPUT_SCHEMA if c in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=_INGEST_BATCH, columns=columns):
                    rows = batch.to_pylist()
                    _ingest_batch(index, rows, start, counts)
                    for row in rows:
                        if row.get("stats"):
                            stats = stats + BackendStats.model_validate_json(row["stats"])
            except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError: a torn file of a killed run
                counts["unreadable_files"] += 1
    for attempt in attempts:
        shutil.rmtree(attempt, ignore_errors=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    counts["backend_stats"] = stats
    return counts


def _ingest_batch(index: JudgmentIndex, rows: list[dict], start: int, counts: dict[str, int]) -> None:
    lines = index.add_better([(row["key"], bool(row["final"]), row["line"]) for row in rows], retried_after=start)
    counts["appended"] += len(lines)
    counts["appended_final"] += sum(final for _, final, _ in lines)
    counts["skipped"] += len(rows) - len(lines)


# -- the stage -----------------------------------------------------------------------------------------------

def _todo_dataset(path: Path, spec: dict[str, Any], probe_key: str, done: frozenset[str], batch_size: int,
                  shard: tuple[int, int] | None) -> Any:
    """The input on Ray as (key, pair JSON) rows still to judge: validated, keyed, in the shard, not done."""
    import ray

    source, jsonl = _read(path)
    return source.map_batches(
        _todo, batch_format="pyarrow", batch_size=max(batch_size, 256),
        fn_kwargs={"spec": spec, "probe_key": probe_key, "done": ray.put(done), "jsonl": jsonl, "shard": shard})


def _done_set(run: RunFolder) -> frozenset[str]:
    with JudgmentIndex(run.file(JUDGMENTS)) as index:
        return frozenset(index.final_keys())


def ray_label_stage(
    pairs_path: str | Path, judge: str | Path | JudgeSpec, run: RunFolder, batch_size: int = 64, actors: int = 1,
    gpus_per_actor: float = 0, address: str | None = None, keep_prompts: float = 0.01,
    shard: tuple[int, int] | None = None, progress: bool = True, extra_manifest: dict | None = None,
    pairs: Iterable | None = None, total: int | None = None, ray_init_args: dict[str, Any] | None = None,
    after_ray: Callable[[], None] | None = None, stall_s: float = 600.0,
) -> dict[str, Any]:
    """Label the pairs at `pairs_path` on Ray (see the module doc) and write the run folder's outputs; return
    the local stage's summary with the Ray facts added.

    `actors` judge actors each open the judge's backends once (one engine each) and get `gpus_per_actor` GPUs
    (0 on CPU clusters, or for API backends). `address`: a Ray cluster (`auto`, `ray://host:10001`); None
    connects to RAY_ADDRESS or starts a local Ray (rlaif.stages.ray_cluster; a Ray already initialised in this
    process is used as it is, and left running). The actors are cut to what the cluster can hold (said on stderr).
    `pairs`/`total`: the input stream and row count for the output pass, when the caller already opened it (default:
    the input read again). `ray_init_args`: extra `ray.init` keywords. `after_ray()` is called once the cluster's
    part is over (ended or failed), before the local output pass. `stall_s`: the run is stopped (RayStalled) when no
    judgment comes back for that long."""
    import ray
    import ray.data

    path = Path(pairs_path)
    spec = judge if isinstance(judge, (JudgeConfig, EnsembleJudgeConfig)) else load_judge_spec(judge)
    data = spec_data(spec)
    identity = judge_identity(spec, "pairwise", "labeling pairs")  # a wrong judge fails here, with no backend opened
    probe_key = identity.key(_PROBE)
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: the index must be in 0..{shard[1] - 1}")

    earlier = ingest_attempts(run)  # a killed earlier run's Parquet files: not judged again
    done = _done_set(run)
    joined, started_local = connect(address, ray_init_args, actors)
    asked = actors
    attempt = f"attempt-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}"
    began = time.perf_counter()
    context = ray.data.DataContext.get_current()
    bars, context.enable_progress_bars = context.enable_progress_bars, progress
    try:
        actors = fit_actors(actors, gpus_per_actor)
        todo = _todo_dataset(path, data, probe_key, done, batch_size, shard)
        if done and todo.limit(1).count() == 0:  # a rerun: look for one pair left before any engine starts
            attempt = ""  # nothing left to judge: no actor (no engine) is started
        else:
            judged_ds = todo.map_batches(
                JudgeActor, batch_format="pyarrow", batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus_per_actor or None,
                fn_constructor_kwargs={"spec": data, "probe_key": probe_key, "keep_prompts": keep_prompts})
            output = run.file(RAY_FOLDER).resolve() / attempt
            with watchdog(output, stall_s, actors, gpus_per_actor, progress):
                judged_ds.write_parquet(str(output))
    finally:
        ray_seconds = time.perf_counter() - began
        context.enable_progress_bars = bars
        del done
        if after_ray is not None:
            after_ray()
        judged = ingest_attempts(run)  # what finished is kept, also when the Ray run failed part-way
        if started_local:
            forget_owner()
        if joined:
            ray.shutdown()  # stops a local Ray this call started; only leaves a cluster it joined

    facts = {
        "actors": actors, "actors_asked": asked, "gpus_per_actor": gpus_per_actor, "address": address,
        "local_ray_started": started_local, "attempt": attempt or None,
        "judged_on_ray": judged["appended"], "final_on_ray": judged["appended_final"],
        "repeated_judgments_dropped": judged["skipped"], "unreadable_files": judged["unreadable_files"],
        "ingested_from_earlier_attempts": earlier["appended"], "ray_seconds": round(ray_seconds, 2),
        "ray_version": ray.__version__,
    }
    stats = judged["backend_stats"]  # the actors' requests, tokens and failures in this run
    stream = pairs if pairs is not None else iter_input(path, CandidatePair)
    options = LabelOptions(keep_prompts=keep_prompts, shard=shard, total=total, source=str(pairs_path),
                           extra_manifest={**(extra_manifest or {}), "runner": "ray", "ray": facts})
    summary = record_judgments(stream, identity, run, stats, batch_size, progress, options,
                               judged=judged["appended"], judge_seconds=ray_seconds)
    summary.update(runner="ray", ray_actors=actors, ray_gpus_per_actor=gpus_per_actor, ray_attempt=attempt or None,
                   judged_on_ray=judged["appended"])
    return summary
