"""Gold items -> the judge's readings: either judged now with the bulk-labeling code (both orders,
resumable), or matched from the judgments of an earlier `rlaif label` run by content.

Every judge kind of the one factory is audited the same way: a pairwise judge, an ensemble or a
self-consistency judge judges the gold pairs; a pointwise judge scores both responses of each pair with the
scoring stage and the pair's P(A better) is read from the two scores exactly as `rlaif score` forms its pairs
(`pair_probability`: sigmoid of the score difference over `pair_scale`; equal scores are a tie)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlaif.audit.gold import GoldItem
from rlaif.errors import InputError
from rlaif.judging.base import PairJudge
from rlaif.judging.pointwise import PointwiseJudge, ScoreItem, ScoreRecord
from rlaif.records import TIE_PREFIX, CandidatePair, Judgment, content_key
from rlaif.stages.label import JUDGMENTS, label_pairs
from rlaif.stages.score import pair_probability, score_items
from rlaif.store.runfolder import RunFolder

__all__ = ["AuditRecord", "gold_pair", "judge_gold", "match_run"]


@dataclass(frozen=True)
class AuditRecord:
    """One gold item and what the judge made of it (None: the item has no judgment at all)."""

    item: GoldItem
    judgment: Judgment | None
    swapped: bool = False
    """True when the judgment was made with the gold's B as response_1."""

    @property
    def labeled(self) -> bool:
        """The judge gave a reading: a label or a tie (a tie is the verdict "tie", not a missing one)."""
        return self.judgment is not None and self.judgment.outcome is not None

    @property
    def p_a(self) -> float:
        """P(gold response A is better); 0.5 for a judge tie."""
        assert self.judgment is not None and self.judgment.outcome is not None, "only judged records have p_a"
        p = self.judgment.outcome
        return 1.0 - p if self.swapped else p

    def p_a_by_order(self) -> tuple[float | None, float | None]:
        """P(A better) read from each presentation order, averaged over principles (None if absent)."""
        found: dict[str, list[float]] = {"12": [], "21": []}
        for o in self._orders():
            if o.p_first is not None:
                found[o.order].append(1.0 - o.p_first if self.swapped else o.p_first)
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        first, second = mean(found["12"]), mean(found["21"])
        return (second, first) if self.swapped else (first, second)

    def p_first_shown(self) -> list[float]:
        """For each order read, P(whichever response was shown first is better)."""
        return [o.p_first if o.order == "12" else 1.0 - o.p_first for o in self._orders() if o.p_first is not None]

    def _orders(self) -> list:
        return self.judgment.order_verdicts() if self.judgment is not None else []


def gold_pair(item: GoldItem) -> CandidatePair:
    # Gold responses may be legitimately empty (humans judged an empty answer); the judge must see them
    # exactly as they are, so the non-empty check of user-supplied pairs is skipped here on purpose.
    return CandidatePair.model_construct(id=item.id, prompt=item.prompt, response_1=item.response_a,
                                         response_2=item.response_b, source={"gold": True})


def judge_gold(items: list[GoldItem], judge: PairJudge | PointwiseJudge, run: RunFolder, batch_size: int = 16,
               progress: bool = True) -> list[AuditRecord]:
    """Judge every gold pair with the bulk-labeling code (or score both responses, for a pointwise judge);
    a rerun into the same folder resumes."""
    if isinstance(judge, PointwiseJudge):
        return _score_gold(items, judge, run, batch_size, progress)
    result = label_pairs([gold_pair(i) for i in items], judge, run, batch_size=batch_size, progress=progress)
    by_key = {j.key: j for j in result.judgments}
    return [AuditRecord(item, by_key.get(judge.key(gold_pair(item)))) for item in items]


def _score_item(item: GoldItem, side: str) -> ScoreItem:
    # as in gold_pair: an empty gold response is scored as it is, so the non-empty check is skipped
    response = item.response_a if side == "a" else item.response_b
    return ScoreItem.model_construct(id=f"{item.id}/{side}", prompt=item.prompt, response=response,
                                     prompt_id=None, source={"gold": True})


def _score_gold(items: list[GoldItem], judge: PointwiseJudge, run: RunFolder, batch_size: int,
                progress: bool) -> list[AuditRecord]:
    pairs = [(_score_item(i, "a"), _score_item(i, "b")) for i in items]
    result = score_items([s for pair in pairs for s in pair], judge, run, batch_size=batch_size, progress=progress)
    by_key = {r.key: r for r in result.records}
    scale = judge.config.pointwise.pair_scale
    return [AuditRecord(item, _pair_judgment(item, by_key.get(judge.key(a)), by_key.get(judge.key(b)), scale))
            for item, (a, b) in zip(items, pairs)]


def _pair_judgment(item: GoldItem, a: ScoreRecord | None, b: ScoreRecord | None, scale: float) -> Judgment | None:
    """A pair's reading from its two scores: P(A better) = sigmoid((score_a - score_b) / scale)."""
    if a is None or b is None:
        return None
    missing = [f"{side}: {r.reason}" for side, r in (("response A", a), ("response B", b)) if not r.scored]
    p = None if missing else pair_probability(a.score, b.score, scale)  # type: ignore[arg-type]
    tie = p == 0.5
    reason = ("unscored " + "; ".join(missing)) if missing else (TIE_PREFIX + "equal scores" if tie else None)
    return Judgment.model_construct(
        key=content_key(a.key, b.key), pair_id=item.id, pair_key=content_key(item.prompt, item.response_a, item.response_b),
        per_principle=[], p_first=None if tie else p, orders_agree=None, reason=reason,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens, completion_tokens=a.completion_tokens + b.completion_tokens,
        cost_usd=a.cost_usd + b.cost_usd, latency_s=a.latency_s + b.latency_s, component_p=[], spread=None,
        vote_share=None, members=[], failed_members=[], **a.provenance().model_dump())


def match_run(items: list[GoldItem], run_dir: str | Path) -> list[AuditRecord]:
    """Match gold items to the judgments of an earlier label run by (prompt, responses) content, either order."""
    judgments = RunFolder(run_dir).read(JUDGMENTS, Judgment)
    if not judgments:
        raise InputError(f"{run_dir} has no {JUDGMENTS}: point --labels at a folder written by `rlaif label`")
    by_pair = {j.pair_key: j for j in judgments}
    records = []
    for item in items:
        straight = by_pair.get(content_key(item.prompt, item.response_a, item.response_b))
        swapped = by_pair.get(content_key(item.prompt, item.response_b, item.response_a))
        records.append(AuditRecord(item, straight or swapped, swapped=straight is None and swapped is not None))
    return records
