"""The labeling stage: candidate pairs in, judgments out, resumable.

Finished labels are appended to `judgments.jsonl` batch by batch. On a rerun every pair whose label is
already there (same texts, same judge, template and constitution versions) is skipped, so nothing is
redone or written twice; unlabeled pairs are tried again, since their cause may have been transient,
except ties: the same judge would tie again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from rlaif.judge import PairwiseJudge
from rlaif.records import CandidatePair, Judgment
from rlaif.runfolder import RunFolder

__all__ = ["LabelResult", "label_pairs", "JUDGMENTS"]

JUDGMENTS = "judgments.jsonl"


@dataclass
class LabelResult:
    """What the stage did: final judgments in input order, and how many were new or reused."""

    judgments: list[Judgment]
    judged_now: int = 0
    reused: int = 0
    seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)


def latest_judgments(run: RunFolder) -> dict[str, Judgment]:
    """The last judgment recorded for each key (a rerun may have re-tried an unlabeled pair)."""
    return {j.key: j for j in run.read(JUDGMENTS, Judgment)}


def label_pairs(
    pairs: list[CandidatePair], judge: PairwiseJudge, run: RunFolder, batch_size: int = 64, progress: bool = True
) -> LabelResult:
    started = time.perf_counter()
    done = latest_judgments(run)
    unique: dict[str, CandidatePair] = {}
    duplicates = []
    for pair in pairs:
        key = judge.key(pair)
        if key in unique:
            duplicates.append(pair.id)
        else:
            unique[key] = pair
    todo = [p for k, p in unique.items() if not (k in done and done[k].final)]
    reused = len(unique) - len(todo)
    bar = tqdm(total=len(todo), desc="judging pairs", unit="pair", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        judged = judge.judge(batch)
        run.append(JUDGMENTS, judged)
        done.update((j.key, j) for j in judged)
        bar.update(len(batch))
    bar.close()
    return LabelResult(
        judgments=[done[k] for k in unique], judged_now=len(todo), reused=reused,
        seconds=time.perf_counter() - started, duplicates=duplicates,
    )
