"""Where the service keeps each job's files: one folder per batch, audit and campaign, named by its id."""

from __future__ import annotations

from pathlib import Path

from rlaif.service.settings import ServiceSettings

__all__ = ["batch_folder", "audit_folder", "campaign_folder"]


def batch_folder(settings: ServiceSettings, batch_id: str) -> Path:
    return settings.service_dir / "batches" / batch_id


def audit_folder(settings: ServiceSettings, audit_id: str) -> Path:
    return settings.service_dir / "audits" / audit_id


def campaign_folder(settings: ServiceSettings, campaign_id: str) -> Path:
    return settings.service_dir / "campaigns" / campaign_id
