"""The labeling stage: candidate pairs in, judgments out, resumable.

Finished labels are appended to `judgments.jsonl` batch by batch. On a rerun every pair whose label is
already there (same texts, same judge, template and constitution versions) is skipped, so nothing is
redone or written twice (rlaif.runfolder.resume_in_batches); unlabeled pairs are tried again, since their cause may have been transient,
except ties: the same judge would tie again.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from rlaif.judge import PairwiseJudge
from rlaif.records import CandidatePair, Judgment
from rlaif.runfolder import RunFolder, resume_in_batches

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
    done = resume_in_batches(run, JUDGMENTS, Judgment, pairs, judge.key, lambda j: j.final, judge.judge, batch_size,
                             progress, desc="judging pairs", unit="pair")
    return LabelResult(judgments=list(done.records.values()), judged_now=done.done_now, reused=done.reused,
                       seconds=done.seconds, duplicates=done.duplicates)
