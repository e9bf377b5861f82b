"""The labeling stage: candidate pairs in, judgments out, resumable; the dataset and the manifest written as
it goes, in constant memory whatever the size of the input.

Pairs are read as a stream and judged a chunk at a time (`batch_size` pairs: one backend call, so size it for
the engine; thousands keep a GPU busy). Each finished chunk's judgments are appended to `judgments.jsonl`
(compact: the rendered judge prompts are kept only for pairs left unlabeled and a small sample, since the
template version and the pair reproduce them) and indexed by key in SQLite beside it, and the chunk's
dataset rows are written to Arrow shards at once. On a rerun every pair whose label is already there (same
texts, same judge, template and constitution versions) is reused, so nothing is redone or written twice;
unlabeled pairs are tried again, since their cause may have been transient, except ties: the same judge
would tie again. A pair that repeats an earlier pair's texts under another id is judged once, and each id
gets its own row. `shard=(i, n)` keeps only the pairs whose content key falls in shard i of n, so shards of
one input can run anywhere and be merged (rlaif.stages.merge). `record_judgments` is the same pass without a
judge: the judgments were made elsewhere (the Ray runner) and only the outputs are written, from the judge's
identity.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from rlaif.backends.base import BackendStats
from rlaif.backends.pool import Backends
from rlaif.judging.base import PairJudge
from rlaif.judging.factory import make_judge
from rlaif.judging.identity import JudgeIdentity, Spec
from rlaif.records import CandidatePair, Judgment, reason_kind
from rlaif.store.datasets import DatasetWriter, pairwise_features
from rlaif.store.index import JudgmentIndex, SeenSet, judgment_line
from rlaif.store.manifest import write_manifest
from rlaif.store.rows import preference_row, unlabeled_row
from rlaif.store.runfolder import RowError, RunFolder, duplicate_id, resume_in_batches

__all__ = ["LabelOptions", "LabelResult", "label_pairs", "label_stage", "record_judgments", "latest_judgments", "in_shard",
           "keeps_prompt", "JUDGMENTS", "LABEL_FILES"]

JUDGMENTS = "judgments.jsonl"
LABEL_FILES = {"dataset": "dataset/", "preferences": "preferences.jsonl", "unlabeled": "unlabeled.jsonl",
               "invalid_rows": "invalid_rows.jsonl", "judgments": JUDGMENTS}


@dataclass(frozen=True)
class LabelOptions:
    """What the label stage records besides the pairs' labels, and which pairs it keeps."""

    keep_prompts: float = 0.01
    """The share of labeled pairs whose rendered judge prompts are kept in judgments.jsonl (unlabeled: all)."""
    shard: tuple[int, int] | None = None
    """(i, n): keep only the pairs whose content key falls in shard i of n."""
    total: int | None = None
    """Rows in the input, when known: sizes the progress bar."""
    source: str = "input"
    """Names the input in row errors."""
    invalid_rows: Iterable[RowError] = ()
    """Rows rejected before this stage (e.g. a run's invalid prompts), listed in invalid_rows.jsonl."""
    skipped: Iterable[dict] = ()
    """Pairs skipped before this stage with a reason, listed in unlabeled.jsonl."""
    extra_manifest: Mapping[str, Any] = field(default_factory=dict)
    """More sections for manifest.json."""


@dataclass
class LabelResult:
    """What `label_pairs` did: final judgments in input order, and how many were new or reused."""

    judgments: list[Judgment]
    judged_now: int = 0
    reused: int = 0
    seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)


def latest_judgments(run: RunFolder) -> dict[str, Judgment]:
    """The last judgment recorded for each key (a rerun may have re-tried an unlabeled pair)."""
    return {j.key: j for j in run.read(JUDGMENTS, Judgment)}


def label_pairs(pairs: list[CandidatePair], judge: PairJudge, run: RunFolder, batch_size: int = 64,
                progress: bool = True) -> LabelResult:
    """Judge what is not judged yet in `run` and return every pair's latest judgment, in memory: for the
    stages that need them all at once (rank, audit, hygiene, evaluation) on inputs of their size."""
    done = resume_in_batches(run, JUDGMENTS, Judgment, pairs, judge.key, lambda j: j.final, judge.judge, batch_size,
                             progress, desc="judging pairs", unit="pair")
    return LabelResult(judgments=list(done.records.values()), judged_now=done.done_now, reused=done.reused,
                       seconds=done.seconds, duplicates=done.duplicates)


def in_shard(pair: CandidatePair, shard: tuple[int, int] | None) -> bool:
    """Whether the pair's content key falls in shard i of n (every pair is in exactly one shard)."""
    return shard is None or int(pair.key, 16) % shard[1] == shard[0]


@dataclass
class _Counts:
    pairs: int = 0
    duplicates: int = 0
    labeled: int = 0
    unlabeled: int = 0
    invalid: int = 0
    other_shards: int = 0
    judged_now: int = 0
    reused: int = 0
    agree: int = 0
    readable_orders: int = 0
    cost_usd: float = 0.0
    reasons: Counter = field(default_factory=Counter)


def _numbered(items: Iterable) -> Iterator[tuple[int, CandidatePair | RowError]]:
    """(row number, record): streams from rlaif.store.inputs come numbered; plain lists are numbered here."""
    for position, item in enumerate(items, start=1):
        yield item if isinstance(item, tuple) else (position, item)


def keeps_prompt(judgment: Judgment, share: float) -> bool:
    """Rendered prompts are kept for every pair left unlabeled and for a fixed share of the rest (by key)."""
    return not judgment.labeled or int(judgment.key[:8], 16) < share * 0x100000000


class _Labeler:
    """One pass over the input; each chunk is judged, recorded and written before the next is read. Given a judge's
    identity instead of a judge, it judges nothing: the judgments were made elsewhere and ingested into the run
    folder, and a pair without one is recorded unlabeled."""

    def __init__(self, judge: PairJudge | JudgeIdentity, run: RunFolder, options: LabelOptions):
        self.judge = None if isinstance(judge, JudgeIdentity) else judge
        self.identity = judge if isinstance(judge, JudgeIdentity) else judge.identity
        self.key = judge.key  # a judge remembers the keys of the last few batches: asked here, then by the judgment
        self.run, self.keep_prompts, self.shard, self.source = run, options.keep_prompts, options.shard, options.source
        self.counts = _Counts()
        self.index = JudgmentIndex(run.file(JUDGMENTS))
        self.ids, self.keys = SeenSet(run.path, "ids"), SeenSet(run.path, "keys")
        self.dataset = DatasetWriter(run, "dataset", pairwise_features(), jsonl="preferences.jsonl")
        self.unlabeled = run.open_jsonl("unlabeled.jsonl")
        self.invalid = run.open_jsonl("invalid_rows.jsonl")

    def chunk(self, rows: list[tuple[int, CandidatePair | RowError]]) -> None:
        kept = self._kept(rows)
        first_key = self.keys.first_seen((key, number) for number, _, key in kept)
        firsts = [(pair, key) for number, pair, key in kept if first_key.get(key, number) == number]
        self.counts.pairs += len(kept)
        self.counts.duplicates += len(kept) - len(firsts)
        fresh = self._judged(firsts)
        earlier = self.index.lookup([key for _, _, key in kept if key not in fresh])
        labeled, unlabeled = [], []
        for _, pair, key in kept:
            judgment = fresh.get(key)
            if judgment is None:
                judgment = fresh[key] = self.index.read(earlier[key][0])
            if judgment.labeled:
                labeled.append(preference_row(pair, judgment))
                self._count_labeled(judgment)
            else:
                unlabeled.append(unlabeled_row(pair, judgment))
                self.counts.reasons[reason_kind(judgment.reason)] += 1
        self.counts.labeled += len(labeled)
        self.counts.unlabeled += len(unlabeled)
        self.dataset.write(labeled)
        self.unlabeled.write(unlabeled)

    def _kept(self, rows: list[tuple[int, CandidatePair | RowError]]) -> list[tuple[int, CandidatePair, str]]:
        """(row number, pair, key) of the chunk's valid pairs in this shard, an id seen before listed as invalid."""
        valid: list[tuple[int, CandidatePair]] = []
        for number, row in rows:
            if isinstance(row, RowError):
                self._invalid(row)
            elif not in_shard(row, self.shard):
                self.counts.other_shards += 1
            else:
                valid.append((number, row))
        first_id = self.ids.first_seen((p.id, n) for n, p in valid)
        kept = []
        for number, pair in valid:
            if first_id.get(pair.id, number) != number:
                self._invalid(duplicate_id(pair, self.source, number, first_id[pair.id]))
            else:
                kept.append((number, pair, self.key(pair)))
        return kept

    def _judged(self, firsts: list[tuple[CandidatePair, str]]) -> dict[str, Judgment]:
        """Judge the distinct pairs not final in the run folder yet and record their judgments (with no judge: record
        the pairs that have no judgment at all as not judged); {key: judgment} of what was recorded now."""
        known = self.index.lookup([key for _, key in firsts])
        if self.judge is None:
            missing = [(pair, key) for pair, key in firsts if key not in known]
            self._not_judged(missing)
            self.counts.reused += len(firsts) - len(missing)
            return {}
        todo = [pair for pair, key in firsts if not (key in known and known[key][1])]
        self.counts.judged_now += len(todo)
        self.counts.reused += len(firsts) - len(todo)
        fresh = {j.key: j for j in self.judge.judge(todo)} if todo else {}
        self.index.append([(j.key, j.final, judgment_line(j, keeps_prompt(j, self.keep_prompts)))
                           for j in fresh.values()])
        return fresh

    def _count_labeled(self, judgment: Judgment) -> None:
        c = self.counts
        c.cost_usd += judgment.cost_usd
        if judgment.orders_agree is not None:
            c.readable_orders += 1
            c.agree += judgment.orders_agree

    def _not_judged(self, missing: list[tuple[CandidatePair, str]]) -> None:
        """Pairs the external judging left without any judgment get an unlabeled one saying so (not a label)."""
        if not missing:
            return
        provenance = self.identity.provenance().model_dump()
        lines = []
        for pair, key in missing:
            judgment = Judgment(key=key, pair_id=pair.id, pair_key=pair.key, per_principle=[],
                                reason="not judged: the external run returned no judgment for this pair; rerun to retry",
                                **provenance)
            lines.append((key, False, judgment_line(judgment, keep_prompt=False)))
        self.index.append(lines)

    def _invalid(self, row: RowError) -> None:
        self.counts.invalid += 1
        self.invalid.write([row])

    def extra(self, invalid_rows: Iterable[RowError], skipped: Iterable[dict]) -> None:
        """Rows rejected before this stage (e.g. invalid prompts of a run) and pairs skipped with a reason."""
        for row in invalid_rows:
            self._invalid(row)
        for item in skipped:
            self.counts.unlabeled += 1
            self.counts.reasons[reason_kind(item.get("reason"))] += 1
            self.unlabeled.write([item])

    def finish(self) -> None:
        self.dataset.close()
        self.unlabeled.close()
        self.invalid.close()
        self.close()

    def close(self) -> None:
        self.index.close()
        self.ids.close()
        self.keys.close()


@contextmanager
def fewer_gc_passes(threshold: int = 100_000) -> Iterator[None]:
    """Bulk judging allocates millions of short-lived records that reference counting frees; the cyclic
    collector, run every 700 allocations by default and rescanning every live object (the loaded libraries'
    included) in its full passes, took about a third of the label stage's time. Inside: what is alive now is
    frozen out of the collector's scans and its first pass runs every `threshold` allocations; both restored
    on the way out."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def label_stage(
    pairs: Iterable[CandidatePair | RowError] | Iterable[tuple[int, CandidatePair | RowError]], judge: Spec,
    backends: Backends, run: RunFolder, batch_size: int = 64, progress: bool = True, options: LabelOptions | None = None,
) -> dict[str, Any]:
    """Judge the pairs (a list, or a lazy stream of numbered records and RowErrors from rlaif.store.inputs) with the
    judge `make_judge(judge, backends)` builds, `batch_size` pairs a backend call; write the dataset, the unlabeled
    and invalid lists and the manifest; return the summary. `options`: see `LabelOptions`."""
    options = options or LabelOptions()
    _check_shard(options.shard)
    pair_judge = make_judge(judge, backends, "pairwise", "labeling pairs")
    before = backends.stats()
    labeler = _Labeler(pair_judge, run, options)
    seconds = _label_pass(labeler, pairs, batch_size, progress, options)
    return _finish(labeler, run, seconds, backends.stats().since(before), options)


def record_judgments(
    pairs: Iterable[CandidatePair | RowError] | Iterable[tuple[int, CandidatePair | RowError]], identity: JudgeIdentity,
    run: RunFolder, backend_stats: BackendStats, batch_size: int = 64, progress: bool = True,
    options: LabelOptions | None = None, judged: int = 0, judge_seconds: float = 0.0,
) -> dict[str, Any]:
    """`label_stage`'s outputs for judgments made elsewhere (the Ray runner) and ingested into `run`: judges nothing
    and opens no backend; a pair with no judgment there is recorded unlabeled ("not judged"). `backend_stats`: the
    counters of the backends that did the judging, for the summary and the manifest. `judged` keys were judged
    elsewhere in this run, in `judge_seconds`: the summary and manifest count them as judged now (not reused), and
    `label_seconds` is the judging plus this output pass (`output_seconds`), so labels_per_second = judged_now /
    label_seconds as for a local run."""
    options = options or LabelOptions()
    _check_shard(options.shard)
    labeler = _Labeler(identity, run, options)
    seconds = _label_pass(labeler, pairs, batch_size, progress, options)
    labeler.counts.judged_now = judged
    labeler.counts.reused = max(0, labeler.counts.reused - judged)
    return _finish(labeler, run, seconds, backend_stats, options, judge_seconds)


def _check_shard(shard: tuple[int, int] | None) -> None:
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard {shard[0]}/{shard[1]}: the index must be in 0..{shard[1] - 1}")


def _label_pass(labeler: _Labeler, pairs: Iterable, batch_size: int, progress: bool, options: LabelOptions) -> float:
    """Run the labeler over the input a chunk at a time and close its outputs; the seconds it took."""
    from tqdm.auto import tqdm

    started = time.perf_counter()  # the work, not the one-time imports of opening the outputs
    try:
        labeler.extra(options.invalid_rows, options.skipped)
        stream = _numbered(pairs)
        with tqdm(total=options.total, desc="labeling pairs", unit="pair", disable=not progress) as bar, fewer_gc_passes():
            while chunk := list(islice(stream, batch_size)):
                labeler.chunk(chunk)
                bar.update(len(chunk))
    except BaseException:
        labeler.close()
        raise
    labeler.finish()
    return time.perf_counter() - started


def _finish(labeler: _Labeler, run: RunFolder, output_seconds: float, backend_stats: BackendStats,
            options: LabelOptions, judge_seconds: float | None = None) -> dict[str, Any]:
    """The summary of a pass, and the manifest written. `judge_seconds`: judging done apart from the pass (Ray)."""
    stats = backend_stats.model_dump()
    c = labeler.counts
    seconds = output_seconds + (judge_seconds or 0.0)
    summary = {
        "pairs": c.pairs, "unique_pairs": c.pairs - c.duplicates, "duplicate_pairs": c.duplicates,
        "labeled": c.labeled, "unlabeled": c.unlabeled, "unlabeled_reasons": dict(c.reasons),
        "invalid_rows": c.invalid, "judged_now": c.judged_now, "reused_from_earlier_runs": c.reused,
        "orders_agree_rate": c.agree / c.readable_orders if c.readable_orders else None,
        "label_seconds": round(seconds, 2),
        "labels_per_second": round(c.judged_now / seconds, 3) if c.judged_now and seconds else None,
        "cost_usd": c.cost_usd, "backend_stats": stats, "run_dir": str(run.path),
    }
    if judge_seconds is not None:
        summary.update(judge_seconds=round(judge_seconds, 2), output_seconds=round(output_seconds, 2))
    if options.shard is not None:
        summary.update(shard=f"{options.shard[0]}/{options.shard[1]}", pairs_in_other_shards=c.other_shards)
    write_manifest(run, labeler.identity.describe(), {k: v for k, v in summary.items() if k != "backend_stats"},
                   LABEL_FILES, **{"backend_stats": stats, "keep_prompts": options.keep_prompts, **options.extra_manifest})
    return summary
