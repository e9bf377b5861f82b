"""An audit folder: metrics (with the judge's and the gold set's fingerprints), one row per item, the report.

The CLI (`rlaif audit`) and the service (`POST /v1/audits`) both write their audits through `save_audit`, so
every audit folder can be compared with another (`rlaif audit compare`) or gated against one (`--baseline`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlaif.audit.compare import ITEMS, item_rows
from rlaif.audit.compute import compute_audit
from rlaif.audit.judging import AuditRecord
from rlaif.audit.report import write_report
from rlaif.store.runfolder import RunFolder

__all__ = ["audit_metrics", "save_audit"]


def audit_metrics(records: list[AuditRecord], fingerprint: dict[str, Any], tie_margin: float = 0.0, n_boot: int = 2000,
                  seed: int = 0) -> tuple[dict, list[dict]]:
    """(metrics with their fingerprint, per-item rows) of one audit."""
    metrics = compute_audit(records, tie_margin=tie_margin, n_boot=n_boot, seed=seed)
    metrics["fingerprint"] = fingerprint
    return metrics, item_rows(records, tie_margin)


def save_audit(out: Path, metrics: dict, rows: list[dict], meta: dict, sections: list[str] | None = None) -> dict[str, Path]:
    """Write items.jsonl and the report files (metrics.json, report.md, report.html, plots) into `out`."""
    RunFolder(out).write_jsonl(ITEMS, rows)
    files = write_report(out, metrics, meta, sections)
    return {ITEMS: out / ITEMS, **files}
