"""One audit, start to end: the gold items judged (or matched to an earlier label run), every metric with its
fingerprints, the gate, and the audit folder written. `rlaif audit` and the service's `POST /v1/audits` both run
their audits here.

    run_audit(items, gold, out, JudgeSource(spec, pool) | LabelsSource(folder), AuditOptions(...)) -> AuditResult

What an audit reads is one of two sources: a judge that judges the gold items now into `out` (resumable: a rerun
into the same folder judges only what is missing), or the judgments of an earlier label run, matched by content.
A caller that measures more on the same audit (the CLI's retests, template variants and baseline check) passes
`extend`: it is called with what was audited, the metrics and the item rows before the folder is written, may add
to the metrics, and returns report sections and failed-gate messages.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlaif.audit.fingerprint import gold_fingerprint, judge_fingerprint, labels_fingerprint
from rlaif.audit.folder import audit_metrics, save_audit
from rlaif.audit.gold import GoldItem
from rlaif.audit.judging import AuditRecord, judge_gold, match_run
from rlaif.audit.report import gate
from rlaif.backends.pool import BackendPool, Backends
from rlaif.judging.base import PairJudge
from rlaif.judging.ensemble import EnsembleJudge
from rlaif.judging.factory import make_judge
from rlaif.judging.identity import Spec, resolve_spec, spec_mode
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.judging.pointwise import PointwiseJudge
from rlaif.store.runfolder import RunFolder

__all__ = ["AuditOptions", "JudgeSource", "LabelsSource", "Audited", "AuditExtras", "AuditResult", "run_audit"]

Judge = PairJudge | PointwiseJudge


@dataclass(frozen=True)
class AuditOptions:
    """How an audit reads and gates: the tie margin, the bootstrap, the bars, and the judging batch."""

    tie_margin: float = 0.0
    """The judge says tie when |P(A) - 0.5| <= this."""
    bootstrap: int = 2000
    """Bootstrap resamples behind the intervals."""
    seed: int = 0
    """Seed of the bootstrap and the cross-validation folds."""
    min_kappa: float | None = None
    """The gate fails when Cohen's kappa is below this (None: no bar)."""
    min_accuracy: float | None = None
    """The gate fails when accuracy (no ties) is below this (None: no bar)."""
    batch_size: int = 16
    """Pairs per judge batch, when the judge judges the gold items now."""
    progress: bool = True
    """Show the judging's progress bar."""


@dataclass(frozen=True)
class JudgeSource:
    """Audit a judge: it judges the gold items now. `judge` is a spec (built with `make_judge` in its own mode, on
    `backends`, or on a pool opened for the audit and closed after it when `backends` is None) or a built judge."""

    judge: Spec | PairwiseJudge | EnsembleJudge | PointwiseJudge
    backends: Backends | None = None
    purpose: str = "an audit"
    """Names the caller in the error a judge that cannot be built gets."""


@dataclass(frozen=True)
class LabelsSource:
    """Audit the labels of an earlier label run: its judgments matched to the gold items by content."""

    folder: str | Path
    name: str | None = None
    """How the report names the labels (default: "labels from FOLDER")."""
    run_id: str | None = None
    """How the fingerprint names the run (default: the folder; the service gives its batch id)."""


@dataclass(frozen=True)
class Audited:
    """What an audit measured: the gold items' records, who made them, and that one's fingerprint."""

    records: list[AuditRecord]
    name: str
    fingerprint: dict[str, Any]
    judge: Judge | None = None
    """The judge that judged the items now (None for labels matched from a run)."""


@dataclass
class AuditExtras:
    """What an `extend` hook adds to the report: markdown sections and failed-gate messages."""

    sections: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


Extend = Callable[[Audited, dict, list[dict]], AuditExtras]
"""Called with what was audited, the metrics (it may add to them) and the item rows, before the folder is written."""


@dataclass(frozen=True)
class AuditResult:
    """One audit's outcome; its folder `out` holds metrics.json, items.jsonl and the report."""

    out: Path
    judge: str
    """The audited judge's name, or the labels' ("labels from RUN")."""
    metrics: dict[str, Any]
    gate: dict[str, Any] | None
    """The gate's verdict on the bars of AuditOptions (None: no bar given)."""
    failed: list[str]
    """Why the audit fails its gates (the bars, and whatever `extend` checked); empty when it passes."""
    fingerprints: dict[str, dict]
    """{"judge": ..., "gold": ...}: what the audit measured (rlaif.audit.fingerprint)."""
    n_items: int
    records: list[AuditRecord]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def accuracy_no_ties(self) -> float | None:
        return ((self.metrics.get("agreement") or {}).get("accuracy_no_ties") or {}).get("value")

    @property
    def cohen_kappa(self) -> float | None:
        return ((self.metrics.get("agreement") or {}).get("cohen_kappa") or {}).get("value")


def run_audit(items: list[GoldItem], gold: str, out: Path, source: JudgeSource | LabelsSource,
              options: AuditOptions | None = None, meta: dict[str, Any] | None = None,
              extend: Extend | None = None) -> AuditResult:
    """Audit the source against the gold `items` (named `gold` in the report and fingerprint) into the folder `out`.

    `meta`: more fields for metrics.json and the report's header (e.g. {"audit_id": ...}), after "judge" and
    "gold". `extend`: see the module doc. The gate's message, when it fails, comes first in `failed`."""
    options = options or AuditOptions()
    out = Path(out)
    with ExitStack() as stack:
        audited = _audited(items, out, source, options, stack)
        fingerprints = {"judge": audited.fingerprint, "gold": gold_fingerprint(items, gold)}
        metrics, rows = audit_metrics(audited.records, fingerprints, options.tie_margin, options.bootstrap, options.seed)
        verdict = gate(metrics, options.min_kappa, options.min_accuracy)
        failed = [verdict["detail"]] if verdict and not verdict["passed"] else []
        extras = extend(audited, metrics, rows) if extend is not None else AuditExtras()
    save_audit(out, metrics, rows, {"judge": audited.name, "gold": gold, **(meta or {}), "gate": verdict}, extras.sections)
    return AuditResult(out=out, judge=audited.name, metrics=metrics, gate=verdict, failed=failed + extras.failed,
                       fingerprints=fingerprints, n_items=len(items), records=audited.records)


def _audited(items: list[GoldItem], out: Path, source: JudgeSource | LabelsSource, options: AuditOptions,
             stack: ExitStack) -> Audited:
    """The gold items' records from the source; a pool opened for the audit is closed with `stack`."""
    if isinstance(source, LabelsSource):
        records = match_run(items, source.folder)
        judgments = [r.judgment for r in records if r.judgment is not None]
        return Audited(records, source.name or f"labels from {source.folder}",
                       labels_fingerprint(source.run_id or str(source.folder), judgments))
    judge: Judge
    if isinstance(source.judge, (PairwiseJudge, EnsembleJudge, PointwiseJudge)):
        judge = source.judge
    else:
        spec = resolve_spec(source.judge)
        backends = source.backends if source.backends is not None else stack.enter_context(BackendPool())
        judge = make_judge(spec, backends, spec_mode(spec), source.purpose)
    records = judge_gold(items, judge, RunFolder(out), options.batch_size, options.progress)
    return Audited(records, judge.name, judge_fingerprint(judge.identity), judge)
