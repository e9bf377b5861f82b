"""Audit jobs: a judge (or a finished batch's labels) against human labels, through the same audit function as
`rlaif audit`, into `<service dir>/audits/<id>/` (metrics.json, items.jsonl, report.md, report.html, plots).

The gold items are an uploaded gold file, or a labeling campaign's human labels (majority over annotators). A judge
is judged on this worker's engines as bulk work (synchronous requests go first)."""

from __future__ import annotations

from typing import Any

from rlaif.audit.gold import GoldItem
from rlaif.service.campaign_data import campaign_gold
from rlaif.service.catalogue import Catalogue, UnknownJudge
from rlaif.service.engines import Engines
from rlaif.service.files import FileStore
from rlaif.service.paths import audit_folder, batch_folder
from rlaif.service.records import AuditStatus, Task
from rlaif.service.settings import ServiceSettings
from rlaif.service.store import JobStore

__all__ = ["AuditWork"]


class AuditWork:
    def __init__(self, settings: ServiceSettings, store: JobStore, files: FileStore, catalogue: Catalogue, engines: Engines):
        self.settings, self.store, self.files, self.catalogue, self.engines = settings, store, files, catalogue, engines

    def run(self, task: Task, stop: Any) -> None:
        from rlaif.audit.run import AuditOptions, JudgeSource, LabelsSource, run_audit

        audit = self.store.audits.get(task.job_id)
        if audit is None or audit.status not in (AuditStatus.queued, AuditStatus.running):
            return
        self.store.audits.set_status(audit.id, AuditStatus.running)
        request = audit.request
        items, source_name = self._gold(request)
        out = audit_folder(self.settings, audit.id)
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        batch_id = request.get("batch_id") or (self._campaign_batch(request["campaign_id"]) if request.get("campaign_id") else None)
        options = AuditOptions(tie_margin=request.get("tie_margin", 0.0), bootstrap=request.get("bootstrap", 1000),
                               seed=request.get("seed", 0), min_kappa=request.get("min_kappa"),
                               min_accuracy=request.get("min_accuracy"), batch_size=self.settings.batch_size, progress=False)
        source: JudgeSource | LabelsSource
        if batch_id is not None:
            source = LabelsSource(batch_folder(self.settings, batch_id), name=f"labels of {batch_id}", run_id=batch_id)
        else:
            try:
                name = self.catalogue.name(request.get("judge"), "pairwise")
            except UnknownJudge as exc:
                raise ValueError(str(exc)) from None
            source = JudgeSource(self.catalogue.specs[name], self.engines.backends(bulk=True, cancelled=stop))
        done = run_audit(items, source_name, out, source, options, meta={"audit_id": audit.id})
        self.store.audits.set_status(audit.id, AuditStatus.completed, result={
            "judge": done.judge, "gold": source_name, "gate": done.gate, "n_items": done.n_items,
            "accuracy_no_ties": done.accuracy_no_ties, "cohen_kappa": done.cohen_kappa})

    def fail(self, task: Task, error: BaseException) -> None:
        self.store.audits.set_status(task.job_id, AuditStatus.failed, error=f"{type(error).__name__}: {error}")

    def _campaign_batch(self, campaign_id: str) -> str:
        campaign = self.store.campaigns.get(campaign_id)
        if campaign is None:
            raise ValueError(f"campaign {campaign_id} not found")
        return campaign.batch_id

    def _gold(self, request: dict[str, Any]) -> tuple[list[GoldItem], str]:
        from rlaif.audit.gold import load_gold

        if request.get("campaign_id"):
            items = campaign_gold(self.store, self.settings, request["campaign_id"])
            if not items:
                raise ValueError("the campaign has no human label yet: label some items on its page first")
            return items, f"human labels of {request['campaign_id']}"
        items, bad = load_gold(self.files.path(request["gold_file_id"]))
        if not items:
            raise ValueError(f"gold file {request['gold_file_id']} has no usable item ({len(bad)} invalid rows)")
        return items, request["gold_file_id"]
