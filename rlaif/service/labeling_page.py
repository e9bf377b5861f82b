"""The labeling page of a campaign link: one item at a time (prompt, the two responses left and right), A / B / tie
by button or keyboard, the progress, and, when every item is labeled, the button that runs the audit.

The link is bound to one annotator: the page shows that name as fixed text and labels only under it. Texts are
untrusted: every one is HTML-escaped, and the script reads what it needs (the link's path, the item) from escaped
data- attributes, never from data inside the script; style and script carry the reply's CSP nonce.
"""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

from rlaif.service.campaign_data import CampaignItem
from rlaif.service.pages import html_reply

__all__ = ["LabelingPage", "message_page"]

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
#annotator { font-weight: 600; }
.help, #audit-status { color: #555; font-size: .9rem; text-align: center; } #error { color: #b00020; text-align: center; }
progress { width: 12rem; }
"""

# No data inside the script: it reads the link's path and the item from escaped data- attributes. A saved answer
# reloads the page, which shows the annotator's next unlabeled item.
_SCRIPT = """
(function () {
  "use strict";
  var body = document.body, base = body.dataset.base, item = body.dataset.item;
  var KEYS = {"1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right",
              "3": "tie", "ArrowDown": "tie", "t": "tie", "T": "tie"};
  function $(id) { return document.getElementById(id); }
  function fail(message) { $("error").textContent = message; }
  function message(r, data) { return (data && data.error && data.error.message) || "HTTP " + r.status; }
  var buttons = document.querySelectorAll("button.choice"), busy = false;
  function choose(choice) {
    if (busy || !item) { return; }
    busy = true;
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(base + "/items/" + encodeURIComponent(item), {method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({choice: choice})})
      .then(function (r) {
        if (r.ok) { location.replace(base); return; }
        return r.json().catch(function () { return null; }).then(function (data) {
          throw new Error("saving the label failed: " + message(r, data));
        });
      })
      .catch(function (err) { busy = false; buttons.forEach(function (b) { b.disabled = false; }); fail(err.message); });
  }
  buttons.forEach(function (b) { b.addEventListener("click", function () { choose(b.dataset.choice); }); });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || (e.target.closest && e.target.closest("input, textarea"))) { return; }
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
        if (!r.ok) { throw new Error(message(r, data)); }
        show(data);
      });
    }).catch(function (err) { run.disabled = false; fail(err.message); });
  });
  if (body.dataset.audit) { poll(); }
})();
"""


class LabelingPage:
    """The page of one link (one annotator): the next item they have not labeled, or the audit button."""

    def __init__(self, token: str, annotator: str, items: list[CampaignItem], mine: set[str], audit_id: str | None,
                 nonce: str):
        self.token, self.annotator, self.items, self.mine, self.audit_id, self.nonce = \
            token, annotator, items, mine, audit_id, nonce
        self.item = next((i for i in items if i.item_id not in mine), None)

    def reply(self) -> HTMLResponse:
        return html_reply(self.render(), nonce=self.nonce)

    def render(self) -> str:
        e = html.escape
        done = sum(1 for i in self.items if i.item_id in self.mine)
        data = (f'data-base="/label/{e(self.token)}" data-item="{e(self.item.item_id) if self.item else ""}" '
                f'data-audit="{e(self.audit_id or "")}"')
        return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer">'
                f'<title>Which response is better? · rlaif</title><style nonce="{self.nonce}">{_STYLE}</style></head>'
                f'<body {data}><header><h1>Which response is better?</h1>'
                f'<span>Labeling as <span id="annotator">{e(self.annotator)}</span></span>'
                f'<span><progress id="progress-bar" value="{done}" max="{len(self.items)}"></progress> '
                f'<span id="progress">{done} of {len(self.items)} labeled</span></span></header>'
                f'<main>{self._item() if self.item else self._done()}<p id="error" role="alert"></p></main>'
                f'<script nonce="{self.nonce}">{_SCRIPT}</script></body></html>')

    def _item(self) -> str:
        e, item = html.escape, self.item
        assert item is not None
        left, right = item.sides()
        return (f'<section><h2>Prompt</h2><div id="prompt" class="text">{e(item.prompt)}</div></section>'
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


def message_page(title: str, text: str, status: int) -> HTMLResponse:
    """A page with one message (an unknown link, no report yet): no script, no style."""
    e = html.escape
    return html_reply(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
                      f'</head><body><h1>{e(title)}</h1><p>{e(text)}</p></body></html>', status)
