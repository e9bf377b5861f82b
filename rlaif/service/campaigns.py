"""Labeling campaigns: the calibration sample of a finished batch, labeled by people in a browser.

`POST /v1/campaigns` draws the sample from a completed pairwise batch with the strategies of `rlaif humans
sample` and returns a labeling link `/label/<token>`. The token is the annotators' only credential and is
scoped to that one campaign: the service keeps only its sha256, so the link is shown once. The page shows one
item at a time (prompt, the two responses left and right in a seeded random order per item) and records
A / B / tie in the pair's own response_1 / response_2 terms; it starts at the first item the annotator has not
labeled, so a reload (or coming back tomorrow) continues where they were. When every item is labeled, one click
starts the audit of the batch's AI labels against the human labels (`campaign_gold`).

Texts are untrusted: every one is HTML-escaped, the page's script and style carry a per-response CSP nonce, and
no text or token is ever logged (the access log names route templates only).
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import secrets
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from rlaif.audit.sampling import Candidate, labeled_candidates, select
from rlaif.errors import InputError
from rlaif.service.campaign_data import ITEMS, campaign_gold, items_path, read_items
from rlaif.service.db import loads, new_id, now, valid_id
from rlaif.service.http import api_error, job_slot, owner_of, report_html, service_of, start_audit
from rlaif.service.paths import audit_folder, batch_folder
from rlaif.service.schemas import JUDGE_ENDPOINTS, AuditCreate, CampaignCreate
from rlaif.service.settings import ServiceSettings
from rlaif.service.state import Service

__all__ = ["campaign_routes", "campaign_gold"]

DEFAULT_ANNOTATOR = "anonymous"


class LabelChoice(BaseModel):
    """One annotator's answer for the item on the page, in what they saw (left / right), not in A / B."""

    model_config = ConfigDict(extra="forbid")
    choice: Literal["left", "right", "tie"]
    annotator: str = DEFAULT_ANNOTATOR


# drawing the sample --------------------------------------------------------------------------------------
def _write_items(settings: ServiceSettings, campaign_id: str, items: list[dict[str, Any]]) -> None:
    """Write the sample before the campaign's row exists, so every campaign in the database has its items."""
    path = items_path(settings, campaign_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(ITEMS + ".tmp")
    tmp.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    tmp.replace(path)


def _sample_items(picked: list[Candidate], order: list[str], seed: int) -> list[dict[str, Any]]:
    """The sample in the batch's pair order (so strata are not shown in clumps), each with a seeded coin `flip`:
    True shows response_2 on the left, so position on screen says nothing about response_1 / response_2."""
    position = {pair_id: i for i, pair_id in enumerate(order)}
    coin = random.Random(f"flip:{seed}")
    return [{"item_id": str(i), "pair_id": c.pair_id, "prompt": c.prompt, "response_1": c.response_1,
             "response_2": c.response_2, "flip": coin.random() < 0.5}
            for i, c in enumerate(sorted(picked, key=lambda c: position[c.pair_id]))]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _to_label(item: dict[str, Any], choice: str) -> str:
    """left / right / tie on screen -> A (response_1) / B (response_2) / tie, undoing the item's flip."""
    if choice == "tie":
        return "tie"
    return "B" if (choice == "left") == item["flip"] else "A"


def _annotator(name: str | None) -> str:
    """The annotator's name as stored: trimmed, at most 64 characters, "anonymous" when blank."""
    return (name or "").strip()[:64].strip() or DEFAULT_ANNOTATOR


# the API (bearer key, owner only) -------------------------------------------------------------------------
def _progress(svc: Service, campaign_id: str) -> dict[str, Any]:
    labels = svc.db.labels(campaign_id)
    return {"items": len(read_items(svc.settings, campaign_id)), "labeled": len({r["item_id"] for r in labels}),
            "labels": len(labels), "annotators": sorted({r["annotator"] for r in labels})}


def _campaign_object(svc: Service, row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "campaign", "batch_id": row["batch_id"], "n": row["n"],
            "strategy": row["strategy"], "seed": row["seed"], "created_at": row["created_at"],
            "progress": _progress(svc, row["id"]), "audit_id": row["audit_id"],
            "labels_url": f"/v1/campaigns/{row['id']}/labels"}


def _owned_campaign(svc: Service, campaign_id: str, owner: str) -> dict[str, Any]:
    row = svc.db.get("campaigns", campaign_id, owner) if valid_id("campaign", campaign_id) else None
    if row is None:
        raise api_error(404, f"no campaign {campaign_id!r}", "campaign_not_found")
    return row


def _candidates(svc: Service, batch_id: str, owner: str) -> list[Candidate]:
    """The labeled pairs of the caller's completed pairwise batch (404 for anyone else's, 409 when not ready)."""
    batch = svc.db.get("batches", batch_id, owner) if valid_id("batch", batch_id) else None
    if batch is None:
        raise api_error(404, f"no batch {batch_id!r}", "batch_not_found")
    if batch["status"] != "completed" or batch["endpoint"] != JUDGE_ENDPOINTS[0]:
        raise api_error(409, f"batch {batch_id} is a {batch['status']} {batch['endpoint']} batch; a campaign needs a "
                             "completed pairwise batch", "batch_not_ready")
    try:
        candidates = labeled_candidates(batch_folder(svc.settings, batch_id))
    except InputError:
        candidates = []
    if not candidates:
        raise api_error(409, f"batch {batch_id} has no labeled pair to sample", "nothing_to_sample")
    return candidates


def _create(svc: Service, body: CampaignCreate, owner: str) -> dict[str, Any]:
    candidates = _candidates(svc, body.batch_id, owner)
    picked = select(candidates, body.n, body.strategy, body.seed)
    campaign_id, token = new_id("campaign"), secrets.token_urlsafe(32)
    _write_items(svc.settings, campaign_id, _sample_items(picked, [c.pair_id for c in candidates], body.seed))
    svc.db.insert("campaigns", {"id": campaign_id, "owner": owner, "batch_id": body.batch_id,
                                "token_hash": _token_hash(token), "strategy": body.strategy, "n": body.n,
                                "seed": body.seed, "created_at": now()})
    row = svc.db.get("campaigns", campaign_id) or {}
    return {**_campaign_object(svc, row), "label_url": f"/label/{token}"}


def _api_routes(app: FastAPI) -> None:
    @app.post("/v1/campaigns", tags=["campaigns"])
    def create_campaign(body: CampaignCreate, request: Request, owner: str = Depends(owner_of)) -> dict[str, Any]:
        """Draw the calibration sample of a completed pairwise batch for people to label. The reply's `label_url`
        (/label/<token>) is the only time the token is shown: whoever has the link can label this campaign."""
        return _create(service_of(request), body, owner)

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    def get_campaign(campaign_id: str, request: Request, owner: str = Depends(owner_of)) -> dict[str, Any]:
        svc = service_of(request)
        return _campaign_object(svc, _owned_campaign(svc, campaign_id, owner))

    @app.get("/v1/campaigns/{campaign_id}/labels", tags=["campaigns"])
    def campaign_labels(campaign_id: str, request: Request, owner: str = Depends(owner_of)) -> dict[str, Any]:
        """Every human label: A is the pair's response_1, B its response_2 (whatever side the page showed)."""
        svc = service_of(request)
        row = _owned_campaign(svc, campaign_id, owner)
        pair_of = {item["item_id"]: item["pair_id"] for item in read_items(svc.settings, row["id"])}
        data = [{"item_id": r["item_id"], "pair_id": pair_of.get(r["item_id"]), "annotator": r["annotator"],
                 "label": r["label"], "created_at": r["created_at"]} for r in svc.db.labels(row["id"])]
        return {"object": "list", "data": data}


# the labeling page (the token is the credential) ----------------------------------------------------------
def _by_token(svc: Service, token: str) -> dict[str, Any] | None:
    return svc.db.campaign_by_token_hash(_token_hash(token))


def _token_campaign(svc: Service, token: str) -> dict[str, Any]:
    row = _by_token(svc, token)
    if row is None:
        raise api_error(404, "no campaign has this labeling link", "campaign_not_found")
    return row


def _audit_of(svc: Service, campaign: dict[str, Any]) -> dict[str, Any] | None:
    return svc.db.get("audits", campaign["audit_id"]) if campaign["audit_id"] else None


def _audit_status(token: str, audit: dict[str, Any] | None) -> dict[str, Any]:
    """What the page polls: the audit's state and, once it is done, the token-scoped link to its report."""
    if audit is None:
        return {"status": "none", "audit_id": None, "report_url": None, "error": None, "result": None}
    done = audit["status"] == "completed"
    return {"status": audit["status"], "audit_id": audit["id"], "error": audit["error"], "result": loads(audit["result"]),
            "report_url": f"/label/{token}/audit/report" if done else None}


def _reusable(audit: dict[str, Any], labeled: int) -> bool:
    """An earlier audit answers a second click unless it failed or finished on fewer labeled items than now."""
    if audit["status"] == "failed":
        return False
    return audit["status"] != "completed" or (loads(audit["result"]) or {}).get("n_items") == labeled


def _run_audit(svc: Service, campaign: dict[str, Any]) -> dict[str, Any]:
    labeled = _progress(svc, campaign["id"])["labeled"]
    if not labeled:
        raise api_error(409, "no item is labeled yet: label some first", "nothing_labeled")
    audit = _audit_of(svc, campaign)
    if audit is not None and _reusable(audit, labeled):
        return audit
    job_slot(svc, campaign["owner"])
    audit = start_audit(svc, campaign["owner"], AuditCreate(campaign_id=campaign["id"]).model_dump())
    svc.db.update("campaigns", campaign["id"], audit_id=audit["id"])
    return audit


_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _html(body: str, status: int = 200, nonce: str | None = None) -> HTMLResponse:
    """An HTML reply that keeps the token in its URL to itself (no referrer, no cache) and, with a nonce, runs no
    script or style but its own."""
    headers = dict(_HEADERS)
    if nonce:
        headers["Content-Security-Policy"] = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                                              "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                              "frame-ancestors 'none'")
    return HTMLResponse(body, status_code=status, headers=headers)


def _message_page(title: str, text: str, status: int) -> HTMLResponse:
    return _html(f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                 f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>", status)


def _page_routes(app: FastAPI) -> None:
    @app.get("/label/{token}", response_class=HTMLResponse, tags=["labeling page"])
    def label_page(token: str, request: Request, annotator: str = Query(DEFAULT_ANNOTATOR)) -> HTMLResponse:
        """The labeling page, at the first item this annotator has not labeled (all done: the audit button)."""
        svc = service_of(request)
        campaign = _by_token(svc, token)
        if campaign is None:
            return _message_page("Labeling link not found", "This labeling link is unknown: check the address you "
                                 "were given.", 404)
        name = _annotator(annotator)
        mine = {r["item_id"] for r in svc.db.labels(campaign["id"]) if r["annotator"] == name}
        items = read_items(svc.settings, campaign["id"])
        nonce = secrets.token_urlsafe(16)
        page = _Page(token, name, items, mine, campaign["audit_id"], nonce)
        return _html(page.render(), nonce=nonce)

    @app.post("/label/{token}/items/{item_id}", tags=["labeling page"])
    def record_label(token: str, item_id: str, body: LabelChoice, request: Request) -> dict[str, Any]:
        """Record one annotator's answer (a second answer to the same item replaces their first)."""
        svc = service_of(request)
        campaign = _token_campaign(svc, token)
        item = next((i for i in read_items(svc.settings, campaign["id"]) if i["item_id"] == item_id), None)
        if item is None:
            raise api_error(404, f"no item {item_id!r} in this campaign", "item_not_found")
        label, name = _to_label(item, body.choice), _annotator(body.annotator)
        svc.db.save_label(campaign["id"], item_id, name, label)
        mine = {r["item_id"] for r in svc.db.labels(campaign["id"]) if r["annotator"] == name}
        return {"item_id": item_id, "annotator": name, "label": label, "labeled_by_you": len(mine),
                "items": len(read_items(svc.settings, campaign["id"]))}

    @app.post("/label/{token}/audit", tags=["labeling page"])
    def start_campaign_audit(token: str, request: Request) -> dict[str, Any]:
        """Audit the batch's AI labels against this campaign's human labels (an audit already under way, or done on
        the same labels, is returned instead of starting another)."""
        svc = service_of(request)
        return _audit_status(token, _run_audit(svc, _token_campaign(svc, token)))

    @app.get("/label/{token}/audit", tags=["labeling page"])
    def campaign_audit_status(token: str, request: Request) -> dict[str, Any]:
        svc = service_of(request)
        return _audit_status(token, _audit_of(svc, _token_campaign(svc, token)))

    @app.get("/label/{token}/audit/report", response_class=HTMLResponse, tags=["labeling page"])
    def campaign_audit_report(token: str, request: Request) -> HTMLResponse:
        svc = service_of(request)
        campaign = _by_token(svc, token)
        audit = _audit_of(svc, campaign) if campaign else None
        if campaign is None or audit is None or audit["status"] != "completed":
            return _message_page("No audit report yet", "The audit of this campaign has not finished (or not started): "
                                 "go back to the labeling page and run it.", 404 if campaign is None else 409)
        return _html(report_html(audit_folder(svc.settings, audit["id"])))


def campaign_routes(app: FastAPI) -> None:
    """Add the campaign API and the labeling page to the app."""
    _api_routes(app)
    _page_routes(app)


# the page -------------------------------------------------------------------------------------------------
_STYLE = """
body { font: 16px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 1.5rem; color: #1d1d1f; }
header { display: flex; flex-wrap: wrap; gap: 1rem 2rem; align-items: center; justify-content: space-between; }
h1 { font-size: 1.3rem; margin: 0; } h2 { font-size: .85rem; text-transform: uppercase; color: #666; margin: 1rem 0 .3rem; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; border: 1px solid #ccc; border-radius: 6px; padding: .75rem;
        background: #fafafa; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.buttons { display: flex; gap: 1rem; justify-content: center; margin: 1.2rem 0 .5rem; }
button { font-size: 1rem; padding: .6rem 1.4rem; border-radius: 6px; border: 1px solid #888; background: #fff; cursor: pointer; }
button:disabled { opacity: .5; cursor: wait; }
kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3em; font-size: .85em; background: #f4f4f4; }
.help, #audit-status { color: #555; font-size: .9rem; text-align: center; } #error { color: #b00020; text-align: center; }
progress { width: 12rem; }
"""

# No data inside the script: it reads the token path, item and annotator from escaped data- attributes.
_SCRIPT = """
(function () {
  "use strict";
  var body = document.body, base = body.dataset.base, item = body.dataset.item, current = body.dataset.annotator;
  var KEY = "rlaif-annotator", KEYS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right",
                                       "3": "tie", "ArrowDown": "tie", "t": "tie", "T": "tie"};
  var params = new URLSearchParams(location.search), stored = localStorage.getItem(KEY);
  function $(id) { return document.getElementById(id); }
  function go(name) { location.replace(base + "?" + new URLSearchParams({annotator: name})); }
  function fail(message) { $("error").textContent = message; }
  if (params.has("annotator")) { localStorage.setItem(KEY, current); }
  else if (stored && stored !== current) { go(stored); return; }
  $("annotator").addEventListener("change", function (e) {
    var name = e.target.value.trim() || "anonymous";
    localStorage.setItem(KEY, name);
    go(name);
  });
  var buttons = document.querySelectorAll("button.choice"), busy = false;
  function choose(choice) {
    if (busy || !item) { return; }
    busy = true;
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(base + "/items/" + encodeURIComponent(item), {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({choice: choice, annotator: current})})
      .then(function (r) { if (!r.ok) { throw new Error("saving the label failed (HTTP " + r.status + ")"); } go(current); })
      .catch(function (err) { busy = false; buttons.forEach(function (b) { b.disabled = false; }); fail(err.message); });
  }
  buttons.forEach(function (b) { b.addEventListener("click", function () { choose(b.dataset.choice); }); });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || e.target.closest("input, textarea")) { return; }
    if (KEYS[e.key] && item) { e.preventDefault(); choose(KEYS[e.key]); }
  });
  var run = $("run-audit");
  if (!run) { return; }
  function show(s) {
    var text = {queued: "Audit queued…", running: "Audit running…", completed: "Audit finished.",
                failed: "The audit failed: " + (s.error || "unknown error")}[s.status];
    $("audit-status").textContent = text || "";
    if (s.status === "completed") { $("report-link").href = s.report_url; $("report-link").hidden = false; }
    run.disabled = s.status === "queued" || s.status === "running";
    if (s.status === "queued" || s.status === "running") { setTimeout(poll, 1000); }
  }
  function poll() {
    fetch(base + "/audit").then(function (r) { return r.json(); }).then(show)
      .catch(function () { setTimeout(poll, 3000); });
  }
  run.addEventListener("click", function () {
    run.disabled = true;
    fetch(base + "/audit", {method: "POST"}).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error((data.error && data.error.message) || "HTTP " + r.status); }
        show(data);
      });
    }).catch(function (err) { run.disabled = false; fail(err.message); });
  });
  if (body.dataset.audit) { poll(); }
})();
"""


class _Page:
    """The labeling page for one annotator: the next item they have not labeled, or the audit button."""

    def __init__(self, token: str, annotator: str, items: list[dict[str, Any]], mine: set[str], audit_id: str | None,
                 nonce: str):
        self.token, self.annotator, self.items, self.mine, self.audit_id, self.nonce = \
            token, annotator, items, mine, audit_id, nonce
        self.item = next((i for i in items if i["item_id"] not in mine), None)

    def render(self) -> str:
        e = html.escape
        done = sum(1 for i in self.items if i["item_id"] in self.mine)
        data = (f'data-base="/label/{e(self.token)}" data-annotator="{e(self.annotator)}" '
                f'data-item="{e(self.item["item_id"]) if self.item else ""}" data-audit="{e(self.audit_id or "")}"')
        return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">'
                f'<title>Which response is better? · rlaif</title><style nonce="{self.nonce}">{_STYLE}</style></head>'
                f'<body {data}><header><h1>Which response is better?</h1>'
                f'<label>Annotator <input id="annotator" value="{e(self.annotator)}" maxlength="64" autocomplete="off"></label>'
                f'<span><progress id="progress-bar" value="{done}" max="{len(self.items)}"></progress> '
                f'<span id="progress">{done} of {len(self.items)} labeled</span></span></header>'
                f'<main>{self._item() if self.item else self._done()}<p id="error" role="alert"></p></main>'
                f'<script nonce="{self.nonce}">{_SCRIPT}</script></body></html>')

    def _item(self) -> str:
        e, item = html.escape, self.item
        assert item is not None
        left, right = (item["response_2"], item["response_1"]) if item["flip"] else (item["response_1"], item["response_2"])
        return (f'<section><h2>Prompt</h2><div id="prompt" class="text">{e(item["prompt"])}</div></section>'
                f'<div class="pair"><section><h2>Left</h2><div id="left" class="text">{e(left)}</div></section>'
                f'<section><h2>Right</h2><div id="right" class="text">{e(right)}</div></section></div>'
                '<div class="buttons">'
                '<button id="btn-left" class="choice" data-choice="left">Left better <kbd>1</kbd> <kbd>←</kbd></button>'
                '<button id="btn-tie" class="choice" data-choice="tie">Tie <kbd>3</kbd> <kbd>↓</kbd> <kbd>T</kbd></button>'
                '<button id="btn-right" class="choice" data-choice="right">Right better <kbd>2</kbd> <kbd>→</kbd></button>'
                '</div><p class="help" id="shortcuts">Keyboard: <kbd>1</kbd> or <kbd>←</kbd> left is better, '
                '<kbd>2</kbd> or <kbd>→</kbd> right is better, <kbd>3</kbd>, <kbd>↓</kbd> or <kbd>T</kbd> tie. '
                'Your answer is saved at once; reloading the page continues where you were.</p>')

    def _done(self) -> str:
        return (f'<section id="done"><h2>Done</h2><p>You have labeled all {len(self.items)} items. Thank you!</p>'
                '<div class="buttons"><button id="run-audit">Run the audit</button></div>'
                '<p id="audit-status" role="status"></p>'
                '<p class="help"><a id="report-link" href="#" hidden>Open the audit report</a></p></section>')
