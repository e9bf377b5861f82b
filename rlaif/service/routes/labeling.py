"""Labeling campaigns: the calibration sample of a finished batch, labeled by people in a browser.

`POST /v1/campaigns` draws the sample from a completed pairwise batch with the strategies of `rlaif humans sample`
and makes one labeling link `/label/<token>` per annotator (`annotators`, default one named "annotator-1");
`POST /v1/campaigns/{id}/links` adds a link for one more annotator. A link is bound to its annotator: whoever has
it labels under that name and no other. The token is the link's only credential and is scoped to that one campaign
and annotator: the service keeps only its sha256, so a link is shown once. The page (labeling_page.py) shows one
item at a time and records A / B / tie in the pair's own response_1 / response_2 terms; it starts at the first item
the link's annotator has not labeled, so a reload (or coming back tomorrow) continues where they were. When every
item is labeled, one click starts the audit of the batch's AI labels against the human labels (majority over
annotators, `campaign_gold`).

No text or token is ever logged (the access log names route templates only).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from rlaif.audit.sampling import Candidate, labeled_candidates, select
from rlaif.errors import InputError
from rlaif.service.campaign_data import CampaignItem, read_items, sample_items, write_items
from rlaif.service.http import Owner, api_error, service_of
from rlaif.service.labeling_page import LabelingPage, message_page
from rlaif.service.pages import report_page
from rlaif.service.paths import audit_folder, batch_folder
from rlaif.service.records import AuditJob, AuditStatus, BatchStatus, Campaign
from rlaif.service.routes.audits import start_audit
from rlaif.service.routes.batches import owned_batch
from rlaif.service.schemas import MAX_ANNOTATORS, AuditCreate, CampaignCreate, CampaignLink
from rlaif.service.state import Service
from rlaif.service.store import new_id, now

__all__ = ["router", "LabelChoice"]

router = APIRouter()


class LabelChoice(BaseModel):
    """An answer for the item on the page, in what the annotator saw (left / right), not in A / B. The link decides
    whose answer it is; `annotator`, if sent, must be the link's own (older pages sent it)."""

    model_config = ConfigDict(extra="forbid")
    choice: Literal["left", "right", "tie"]
    annotator: str | None = None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_link() -> tuple[str, str]:
    """(token, its sha256): the token goes to the caller once, the hash to the store."""
    token = secrets.token_urlsafe(32)
    return token, _token_hash(token)


def _label_url(token: str) -> str:
    return f"/label/{token}"


# the API (bearer key, owner only) -------------------------------------------------------------------------
def _progress(svc: Service, campaign_id: str) -> dict[str, Any]:
    labels = svc.store.campaigns.labels(campaign_id)
    return {"items": len(read_items(svc.settings, campaign_id)), "labeled": len({r.item_id for r in labels}),
            "labels": len(labels), "annotators": sorted({r.annotator for r in labels}),
            "links": svc.store.campaigns.annotators(campaign_id)}


def _campaign_object(svc: Service, campaign: Campaign) -> dict[str, Any]:
    return {"id": campaign.id, "object": "campaign", "batch_id": campaign.batch_id, "n": campaign.n,
            "strategy": campaign.strategy, "seed": campaign.seed, "created_at": campaign.created_at,
            "progress": _progress(svc, campaign.id), "audit_id": campaign.audit_id,
            "labels_url": f"/v1/campaigns/{campaign.id}/labels"}


def _owned_campaign(svc: Service, campaign_id: str, owner: str) -> Campaign:
    found = svc.store.campaigns.get(campaign_id, owner)
    if found is None:
        raise api_error(404, f"no campaign {campaign_id!r}", "campaign_not_found")
    return found


def _candidates(request: Request, batch_id: str, owner: str) -> list[Candidate]:
    """The labeled pairs of the caller's completed pairwise batch (404 for anyone else's, 409 when not ready)."""
    batch = owned_batch(request, batch_id, owner)
    if batch.status != BatchStatus.completed or not batch.pairwise:
        raise api_error(409, f"batch {batch_id} is a {batch.status.value} {batch.endpoint} batch; a campaign needs a "
                             "completed pairwise batch", "batch_not_ready")
    try:
        candidates = labeled_candidates(batch_folder(service_of(request).settings, batch.id))
    except InputError:
        candidates = []
    if not candidates:
        raise api_error(409, f"batch {batch_id} has no labeled pair to sample", "nothing_to_sample")
    return candidates


@router.post("/v1/campaigns", tags=["campaigns"])
def create_campaign(body: CampaignCreate, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Draw the calibration sample of a completed pairwise batch for people to label. Each of `annotators` gets a
    link of their own, bound to their name: `label_urls` maps each annotator to /label/<token> (`label_url` is the
    first one's). This reply is the only time the tokens are shown."""
    svc = service_of(request)
    candidates = _candidates(request, body.batch_id, owner)
    picked = select(candidates, body.n, body.strategy, body.seed)
    campaign = Campaign(id=new_id("campaign"), owner=owner, batch_id=body.batch_id, strategy=body.strategy, n=body.n,
                        seed=body.seed, created_at=now())
    write_items(svc.settings, campaign.id, sample_items(picked, [c.pair_id for c in candidates], body.seed))
    links = {name: _new_link() for name in body.annotators}
    svc.store.campaigns.add(campaign, {token_hash: name for name, (_, token_hash) in links.items()})
    label_urls = {name: _label_url(token) for name, (token, _) in links.items()}
    return {**_campaign_object(svc, campaign), "label_urls": label_urls, "label_url": label_urls[body.annotators[0]]}


@router.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
def get_campaign(campaign_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    svc = service_of(request)
    return _campaign_object(svc, _owned_campaign(svc, campaign_id, owner))


@router.post("/v1/campaigns/{campaign_id}/links", tags=["campaigns"])
def add_link(campaign_id: str, body: CampaignLink, request: Request, owner: str = Owner) -> dict[str, Any]:
    """A labeling link for one more annotator (409 if they have one already). The token is shown only here."""
    svc = service_of(request)
    campaign = _owned_campaign(svc, campaign_id, owner)
    names = svc.store.campaigns.annotators(campaign.id)
    if body.annotator in names:
        raise api_error(409, f"annotator {body.annotator!r} already has a link to this campaign (links are shown once; "
                             "add one under another name)", "link_exists")
    if len(names) >= MAX_ANNOTATORS:
        raise api_error(409, f"this campaign has {len(names)} links, the most a campaign has", "too_many_links")
    token, token_hash = _new_link()
    try:
        svc.store.campaigns.add_link(campaign.id, token_hash, body.annotator)
    except Exception:
        if body.annotator in svc.store.campaigns.annotators(campaign.id):  # another request added it just now
            raise api_error(409, f"annotator {body.annotator!r} already has a link to this campaign", "link_exists") from None
        raise
    return {"object": "campaign.link", "campaign_id": campaign.id, "annotator": body.annotator,
            "label_url": _label_url(token)}


@router.get("/v1/campaigns/{campaign_id}/labels", tags=["campaigns"])
def campaign_labels(campaign_id: str, request: Request, owner: str = Owner) -> dict[str, Any]:
    """Every human label: A is the pair's response_1, B its response_2 (whatever side the page showed)."""
    svc = service_of(request)
    campaign = _owned_campaign(svc, campaign_id, owner)
    pair_of = {item.item_id: item.pair_id for item in read_items(svc.settings, campaign.id)}
    data = [{"item_id": r.item_id, "pair_id": pair_of.get(r.item_id), "annotator": r.annotator, "label": r.label,
             "created_at": r.created_at} for r in svc.store.campaigns.labels(campaign.id)]
    return {"object": "list", "data": data}


# the labeling page (the link's token is the credential) ---------------------------------------------------
def _link(svc: Service, token: str) -> tuple[Campaign, str]:
    """The link's campaign and annotator; 404 for an unknown link."""
    found = svc.store.campaigns.by_token_hash(_token_hash(token))
    if found is None:
        raise api_error(404, "no campaign has this labeling link", "campaign_not_found")
    return found


def _labeled_by(svc: Service, campaign_id: str, annotator: str) -> set[str]:
    return {r.item_id for r in svc.store.campaigns.labels(campaign_id) if r.annotator == annotator}


def _audit_status(token: str, audit: AuditJob | None) -> dict[str, Any]:
    """What the page polls: the audit's state and, once it is done, the link's own way to its report."""
    if audit is None:
        return {"status": "none", "audit_id": None, "report_url": None, "error": None, "result": None}
    done = audit.status == AuditStatus.completed
    return {"status": audit.status.value, "audit_id": audit.id, "error": audit.error, "result": audit.result,
            "report_url": f"/label/{token}/audit/report" if done else None}


def _reusable(audit: AuditJob, labeled: int) -> bool:
    """An earlier audit answers a second click unless it failed or finished on fewer labeled items than now."""
    if audit.status == AuditStatus.failed:
        return False
    return audit.status != AuditStatus.completed or (audit.result or {}).get("n_items") == labeled


def _run_audit(svc: Service, campaign: Campaign) -> AuditJob:
    labeled = len({r.item_id for r in svc.store.campaigns.labels(campaign.id)})
    if not labeled:
        raise api_error(409, "no item is labeled yet: label some first", "nothing_labeled")
    audit = svc.store.audits.get(campaign.audit_id)
    if audit is not None and _reusable(audit, labeled):
        return audit
    audit = start_audit(svc, campaign.owner, AuditCreate(campaign_id=campaign.id))
    svc.store.campaigns.set_audit(campaign.id, audit.id)
    return audit


@router.get("/label/{token}", response_class=HTMLResponse, tags=["labeling page"])
def label_page(token: str, request: Request) -> HTMLResponse:
    """The labeling page of the link's annotator, at the first item they have not labeled (all done: the audit
    button)."""
    svc = service_of(request)
    found = svc.store.campaigns.by_token_hash(_token_hash(token))
    if found is None:
        return message_page("Labeling link not found", "This labeling link is unknown: check the address you were "
                            "given.", 404)
    campaign, annotator = found
    items = read_items(svc.settings, campaign.id)
    page = LabelingPage(token, annotator, items, _labeled_by(svc, campaign.id, annotator), campaign.audit_id,
                        secrets.token_urlsafe(16))
    return page.reply()


def _item(svc: Service, campaign_id: str, item_id: str) -> tuple[CampaignItem, int]:
    """The item and the number of items of the campaign; 404 for an item it does not have."""
    items = read_items(svc.settings, campaign_id)
    item = next((i for i in items if i.item_id == item_id), None)
    if item is None:
        raise api_error(404, f"no item {item_id!r} in this campaign", "item_not_found")
    return item, len(items)


@router.post("/label/{token}/items/{item_id}", tags=["labeling page"])
def record_label(token: str, item_id: str, body: LabelChoice, request: Request) -> dict[str, Any]:
    """Record the link's annotator's answer (a second answer to the same item replaces their first)."""
    svc = service_of(request)
    campaign, annotator = _link(svc, token)
    if body.annotator is not None and body.annotator.strip() != annotator:
        raise api_error(403, f"this labeling link labels as {annotator!r}, not {body.annotator.strip()!r}: each "
                             "annotator labels through their own link (the campaign's owner adds one with "
                             "POST /v1/campaigns/{id}/links)", "annotator_mismatch")
    item, total = _item(svc, campaign.id, item_id)
    label = item.label(body.choice)
    svc.store.campaigns.save_label(campaign.id, item.item_id, annotator, label)
    return {"item_id": item.item_id, "annotator": annotator, "label": label,
            "labeled_by_you": len(_labeled_by(svc, campaign.id, annotator)), "items": total}


@router.post("/label/{token}/audit", tags=["labeling page"])
def start_campaign_audit(token: str, request: Request) -> dict[str, Any]:
    """Audit the batch's AI labels against this campaign's human labels, every annotator's (an audit already under
    way, or done on the same labeled items, is returned instead of starting another)."""
    svc = service_of(request)
    campaign, _ = _link(svc, token)
    return _audit_status(token, _run_audit(svc, campaign))


@router.get("/label/{token}/audit", tags=["labeling page"])
def campaign_audit_status(token: str, request: Request) -> dict[str, Any]:
    svc = service_of(request)
    campaign, _ = _link(svc, token)
    return _audit_status(token, svc.store.audits.get(campaign.audit_id))


@router.get("/label/{token}/audit/report", response_class=HTMLResponse, tags=["labeling page"])
def campaign_audit_report(token: str, request: Request) -> HTMLResponse:
    svc = service_of(request)
    found = svc.store.campaigns.by_token_hash(_token_hash(token))
    audit = svc.store.audits.get(found[0].audit_id) if found else None
    if found is None or audit is None or audit.status != AuditStatus.completed:
        return message_page("No audit report yet", "The audit of this campaign has not finished (or not started): go "
                            "back to the labeling page and run it.", 404 if found is None else 409)
    return report_page(audit_folder(svc.settings, audit.id))
