"""Labeling campaigns and the browser labeling page of `rlaif serve`, against real servers.

The fast tests run `rlaif serve` on the instant fake judge and check the API, the links bound to one annotator
each, the mapping of what a person saw (left / right) back to the pair's A / B, `campaign_gold` and the audit, over
plain HTTP. The `vllm` test labels a batch of the embedded model in a real headless Chromium driven by Selenium
through an annotator's link: keyboard shortcuts and buttons, a reload midway, untrusted texts shown as text, then
the audit from the page, checked again through the API.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from service_support import KEYS, Server, fake_judge

from rlaif.audit.sampling import labeled_candidates, select
from rlaif.service.campaign_data import campaign_gold
from rlaif.service.paths import batch_folder
from rlaif.service.settings import ServiceSettings
from rlaif.service.store import JobStore

SEED = 3
"""The seed of most campaigns here: its coin shows item 0 in the pair's own order and item 1 swapped."""

# Every pair carries markup in a text, so whichever items the sample holds, the page must show markup as text.
HTML_PAIRS = [
    ("What does the <b> tag do in HTML?", "It makes text <b>bold</b>.", "It draws a box."),
    ("How do I run JavaScript on a page?", "Put it in a <script>window.__pwned = 1</script> element.", "You cannot."),
    ("Which tag starts a paragraph?", "The <p> tag.", "The <b>table</b> tag."),
    ("How do I show an alert?", "Call alert('hi') in a <script>window.__pwned = 2</script> block.", "Use CSS."),
    ("What is 2 + 2? Answer with <b>one</b> number.", "4", "5"),
    ("Say hello in French & <i>German</i>.", "Bonjour & Hallo.", "Hola <script>window.__pwned = 3</script>."),
    ("Name a primary colour, <i>please</i>.", "Red.", "Purple & <b>green</b>."),
    ("Is water wet? Answer <em>yes</em> or no.", "Yes.", "<img src=x onerror=\"window.__pwned = 4\">No."),
]


def _flips(seed: int, n: int) -> list[bool]:
    """What the service's coin shows for a campaign's items (True: response_2 on the left)."""
    coin = random.Random(f"flip:{seed}")
    return [coin.random() < 0.5 for _ in range(n)]


def _pairs_file(pairs: list[tuple[str, str, str]]) -> bytes:
    return "".join(json.dumps({"custom_id": f"p{i}", "method": "POST", "url": "/v1/judge/pairwise", "body": {
        "pairs": [{"prompt": p, "response_1": r1, "response_2": r2}]}}) + "\n" for i, (p, r1, r2) in enumerate(pairs)).encode()


def _wait(check: Callable[[], Any], what: str, timeout: float = 600, every: float = 0.5) -> Any:
    """Poll until `check()` is truthy; the deadline only turns a stuck service into a failure instead of a hang."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
    return value


def _finished_batch(server: Server, payload: bytes) -> dict:
    """Upload a batch input with the OpenAI client, start the batch, wait until it leaves the active states."""
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=KEYS["alice"])
    upload = client.files.create(file=("in.jsonl", payload), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/judge/pairwise",
                                  completion_window="24h")
    done = _wait(lambda: (b := client.batches.retrieve(batch.id)).status in ("completed", "failed", "cancelled") and b,
                 f"batch {batch.id}")
    return done.model_dump()


def _create(server: Server, batch_id: str, n: int, strategy: str = "uniform", seed: int = SEED,
            annotators: list[str] | None = None) -> dict:
    body = {"batch_id": batch_id, "n": n, "strategy": strategy, "seed": seed,
            **({"annotators": annotators} if annotators is not None else {})}
    status, reply, _ = server.request("POST", "/v1/campaigns", body)
    assert status == 200, reply
    assert isinstance(reply, dict)
    return reply


def _add_link(server: Server, campaign_id: str, annotator: str, who: str | None = "alice") -> tuple[int, Any]:
    status, reply, _ = server.request("POST", f"/v1/campaigns/{campaign_id}/links", {"annotator": annotator}, who=who)
    return status, reply


def _shown_annotator(page: str) -> str:
    """The name the page labels as (fixed text, no field to change it)."""
    assert "<input" not in page, "the page has no name field"
    return page.split('<span id="annotator">', 1)[1].split("</span>", 1)[0]


def _items(server: Server, campaign_id: str) -> list[dict]:
    """The sample as the service stored it (the test's view behind the page)."""
    path = server.service_dir / "campaigns" / campaign_id / "items.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _label(server: Server, url: str, item_id: str, choice: str, **extra: Any) -> tuple[int, Any]:
    """Answer through a link (the page sends only the choice; `extra` adds other body fields)."""
    status, reply, _ = server.request("POST", f"{url}/items/{item_id}", {"choice": choice, **extra}, who=None)
    return status, reply


def _labels(server: Server, campaign_id: str) -> dict[tuple[str, str], str]:
    """(item_id, annotator) -> label, from the API."""
    status, reply, _ = server.request("GET", f"/v1/campaigns/{campaign_id}/labels")
    assert status == 200, reply
    return {(r["item_id"], r["annotator"]): r["label"] for r in reply["data"]}


def _audit_done(server: Server, url: str) -> dict:
    def finished() -> dict | None:
        state = server.request("GET", f"{url}/audit", who=None)[1]
        assert isinstance(state, dict)
        return state if state["status"] in ("completed", "failed") else None

    return _wait(finished, "the campaign's audit")


# the fast tests: rlaif serve on the instant fake judge ----------------------------------------------------
@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("labeling")
    server = Server(folder / "svc", [str(fake_judge(folder))], KEYS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fake_batch(fake_server: Server) -> dict:
    pairs = [(f"Question {i}: <b>why</b>?", f"Because {i} <i>so</i>.", f"No idea {i}.") for i in range(16)]
    batch = _finished_batch(fake_server, _pairs_file(pairs))
    assert batch["status"] == "completed", batch
    return batch


def test_a_campaign_samples_the_batch_with_the_humans_sample_strategies(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=5, strategy="stratified", seed=7)
    candidates = labeled_candidates(batch_folder(ServiceSettings(service_dir=fake_server.service_dir), fake_batch["id"]))
    assert len(candidates) >= 5, "the fake judge labels most pairs"
    items = _items(fake_server, campaign["id"])
    assert {i["pair_id"] for i in items} == {c.pair_id for c in select(candidates, 5, "stratified", 7)}
    order = [c.pair_id for c in candidates]
    assert [i["pair_id"] for i in items] == sorted((i["pair_id"] for i in items), key=order.index), "in the batch's order"
    by_id = {c.pair_id: c for c in candidates}
    for item in items:
        pair = by_id[item["pair_id"]]
        assert (item["prompt"], item["response_1"], item["response_2"]) == (pair.prompt, pair.response_1, pair.response_2)
    assert [i["flip"] for i in items] == _flips(7, len(items))
    assert {k: campaign[k] for k in ("object", "batch_id", "n", "strategy", "seed", "audit_id")} == {
        "object": "campaign", "batch_id": fake_batch["id"], "n": 5, "strategy": "stratified", "seed": 7, "audit_id": None}
    assert campaign["progress"] == {"items": 5, "labeled": 0, "labels": 0, "annotators": [], "links": ["annotator-1"]}
    assert campaign["label_urls"] == {"annotator-1": campaign["label_url"]}, "by default one annotator, annotator-1"
    again = _create(fake_server, fake_batch["id"], n=5, strategy="stratified", seed=7)
    assert [(i["pair_id"], i["flip"]) for i in _items(fake_server, again["id"])] == [(i["pair_id"], i["flip"]) for i in items]
    assert again["label_url"] != campaign["label_url"], "each campaign has its own link"
    many = _create(fake_server, fake_batch["id"], n=500, strategy="least-confident")
    assert many["progress"]["items"] == len(candidates), "n larger than the batch takes every labeled pair"


def test_each_annotator_gets_a_link_shown_once_and_only_its_hash_is_kept(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=3, annotators=[" ann2 ", "ann"])
    assert list(campaign["label_urls"]) == ["ann2", "ann"], "names trimmed, in the order given"
    assert campaign["label_url"] == campaign["label_urls"]["ann2"], "label_url is the first annotator's link"
    assert campaign["progress"]["links"] == ["ann", "ann2"] and campaign["progress"]["annotators"] == []
    tokens = {name: url.removeprefix("/label/") for name, url in campaign["label_urls"].items()}
    assert len(set(tokens.values())) == 2, "one link per annotator"
    for name, token in tokens.items():
        url = f"/label/{token}"
        assert len(token) >= 43, "256 random bits, URL-safe"
        status, page, headers = fake_server.request("GET", url, who=None)
        headers = {k.lower(): v for k, v in headers.items()}
        assert status == 200 and "Which response is better?" in page and _shown_annotator(page) == name
        assert headers["referrer-policy"] == "no-referrer" and "script-src 'nonce-" in headers["content-security-policy"]
    with sqlite3.connect(fake_server.service_dir / "service.sqlite") as db:
        stored = dict(db.execute("SELECT annotator, token_hash FROM campaign_links WHERE campaign_id = ?",
                                 (campaign["id"],)).fetchall())
    assert stored == {name: hashlib.sha256(token.encode()).hexdigest() for name, token in tokens.items()}
    for name in ("service.sqlite", "service.sqlite-wal"):
        path = fake_server.service_dir / name
        for token in tokens.values():
            assert not path.exists() or token.encode() not in path.read_bytes(), f"a token itself is in {name}"
    status, again, _ = fake_server.request("GET", f"/v1/campaigns/{campaign['id']}")
    assert status == 200 and "label_url" not in again and "label_urls" not in again
    assert again["progress"]["links"] == ["ann", "ann2"]
    log = fake_server.log.read_text()
    assert "/label/{token}" in log, "the page's requests are in the access log, by route template"
    assert all(token not in log for token in tokens.values()) and "<b>why</b>" not in log, "no token or text is logged"


def test_the_annotators_are_checked(fake_server: Server, fake_batch: dict):
    body = {"batch_id": fake_batch["id"], "n": 3}
    for annotators in ([], [" "], ["x" * 65], ["ann", " ann "], [f"a{i}" for i in range(101)], "ann", [3]):
        status, reply, _ = fake_server.request("POST", "/v1/campaigns", {**body, "annotators": annotators})
        assert status == 422 and reply["error"]["code"] == "invalid_request", (annotators, reply)
    assert "given more than once" in fake_server.request("POST", "/v1/campaigns", {**body, "annotators": ["a", "a "]})[1][
        "error"]["message"]
    campaign = _create(fake_server, fake_batch["id"], n=3, annotators=["x" * 64, *(f"a{i}" for i in range(99))])
    assert len(campaign["label_urls"]) == 100 and len(set(campaign["label_urls"].values())) == 100, "64 chars, 100 links"
    status, reply = _add_link(fake_server, campaign["id"], "one-more")
    assert status == 409 and reply["error"]["code"] == "too_many_links"


def test_the_owner_adds_a_link_for_another_annotator(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=3)
    status, link = _add_link(fake_server, campaign["id"], " ann2 ")
    assert status == 200, link
    assert {k: link[k] for k in ("object", "campaign_id", "annotator")} == {
        "object": "campaign.link", "campaign_id": campaign["id"], "annotator": "ann2"}
    token = link["label_url"].removeprefix("/label/")
    assert len(token) >= 43 and link["label_url"] != campaign["label_url"]
    status, page, _ = fake_server.request("GET", link["label_url"], who=None)
    assert status == 200 and _shown_annotator(page) == "ann2"
    with sqlite3.connect(fake_server.service_dir / "service.sqlite") as db:
        stored = db.execute("SELECT token_hash FROM campaign_links WHERE campaign_id = ? AND annotator = ?",
                            (campaign["id"], "ann2")).fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    for name in ("ann2", "annotator-1"):
        status, reply = _add_link(fake_server, campaign["id"], name)
        assert status == 409 and reply["error"]["code"] == "link_exists", "one link per annotator, shown once"
    assert _add_link(fake_server, campaign["id"], "ann3", who=None)[0] == 401
    status, reply = _add_link(fake_server, campaign["id"], "ann3", who="bob")
    assert status == 404 and reply["error"]["code"] == "campaign_not_found", "only the owner adds links"
    assert _add_link(fake_server, "campaign_" + "0" * 24, "ann3")[0] == 404
    assert _add_link(fake_server, "not-an-id", "ann3")[0] == 404
    assert _add_link(fake_server, campaign["id"], "  ")[0] == 422
    assert fake_server.request("GET", f"/v1/campaigns/{campaign['id']}")[1]["progress"]["links"] == ["ann2", "annotator-1"]
    _label(fake_server, link["label_url"], _items(fake_server, campaign["id"])[0]["item_id"], "left")
    assert set(_labels(fake_server, campaign["id"]).keys()) == {("0", "ann2")}, "the new link labels as ann2"


def test_campaign_routes_answer_only_their_owner(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=3)
    body = {"batch_id": fake_batch["id"], "n": 3}
    assert fake_server.request("POST", "/v1/campaigns", body, who=None)[0] == 401
    assert fake_server.request("GET", f"/v1/campaigns/{campaign['id']}", who=None)[0] == 401
    assert fake_server.request("POST", "/v1/campaigns", body, who="bob")[0] == 404, "bob may not sample alice's batch"
    assert fake_server.request("POST", "/v1/campaigns", {**body, "batch_id": "batch_" + "0" * 24})[0] == 404
    assert fake_server.request("POST", "/v1/campaigns", {**body, "batch_id": "../../etc"})[0] == 404
    for path in (f"/v1/campaigns/{campaign['id']}", f"/v1/campaigns/{campaign['id']}/labels"):
        status, reply, _ = fake_server.request("GET", path, who="bob")
        assert status == 404 and reply["error"]["code"] == "campaign_not_found"
    assert fake_server.request("GET", "/v1/campaigns/not-an-id")[0] == 404
    failed = _finished_batch(fake_server, b'{"custom_id": "x", "url": "/v1/judge/pairwise", "body": {}}\n')
    assert failed["status"] == "failed"
    status, reply, _ = fake_server.request("POST", "/v1/campaigns", {**body, "batch_id": failed["id"]})
    assert status == 409 and reply["error"]["code"] == "batch_not_ready"
    wrong = "/label/" + "x" * 43
    status, page, _ = fake_server.request("GET", wrong, who=None)
    assert status == 404 and "labeling link is unknown" in page
    assert fake_server.request("POST", f"{wrong}/items/0", {"choice": "left"}, who=None)[0] == 404
    assert fake_server.request("POST", f"{wrong}/audit", who=None)[0] == 404
    assert fake_server.request("GET", f"{wrong}/audit", who=None)[0] == 404
    assert fake_server.request("GET", f"{wrong}/audit/report", who=None)[0] == 404


def test_answers_map_back_to_the_pairs_own_a_and_b_under_the_links_annotator(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=4, annotators=["ann", "ann2"])
    urls, items = campaign["label_urls"], _items(fake_server, campaign["id"])
    url = urls["ann"]
    assert [i["flip"] for i in items[:2]] == [False, True], "item 0 shown as is, item 1 swapped"
    first, second = items[0]["item_id"], items[1]["item_id"]
    status, page, _ = fake_server.request("GET", url, who=None)
    assert _shown_annotator(page) == "ann" and "localStorage" not in page
    assert html.escape(items[0]["prompt"]) in page and items[0]["prompt"] not in page, "texts are escaped"
    assert page.index(html.escape(items[0]["response_1"])) < page.index(html.escape(items[0]["response_2"])), "A left"
    assert "0 of 4 labeled" in page
    assert _label(fake_server, url, first, "left") == (200, {
        "item_id": first, "annotator": "ann", "label": "A", "labeled_by_you": 1, "items": 4})
    assert _label(fake_server, url, second, "left", annotator="ann")[1]["label"] == "B", "left was response_2"
    assert _label(fake_server, url, second, "right", annotator=" ann ")[1] == {
        "item_id": second, "annotator": "ann", "label": "A", "labeled_by_you": 2, "items": 4}, "a relabel replaces"
    for other in ("ann2", "", "anonymous"):
        status, reply = _label(fake_server, url, first, "right", annotator=other)
        assert status == 403 and reply["error"]["code"] == "annotator_mismatch", "ann's link labels only as ann"
        assert "labels as 'ann'" in reply["error"]["message"]
    assert _label(fake_server, urls["ann2"], first, "right")[1] == {
        "item_id": first, "annotator": "ann2", "label": "B", "labeled_by_you": 1, "items": 4}
    status, link = _add_link(fake_server, campaign["id"], "ann3")
    assert status == 200
    assert _label(fake_server, link["label_url"], first, "tie", annotator="ann3")[1]["annotator"] == "ann3"
    assert _label(fake_server, url, first, "middle")[0] == 422
    assert _label(fake_server, url, first, "left", who="ann2")[0] == 422, "no other field in the body"
    assert _label(fake_server, url, "99", "left")[0] == 404
    assert _labels(fake_server, campaign["id"]) == {(first, "ann"): "A", (second, "ann"): "A", (first, "ann3"): "tie",
                                                    (first, "ann2"): "B"}
    for query in ("", "?annotator=ann2", "?annotator=anonymous"):
        status, page, _ = fake_server.request("GET", url + query, who=None)
        assert _shown_annotator(page) == "ann", f"{query or 'no query'}: the link cannot switch annotator"
        assert "2 of 4 labeled" in page and html.escape(items[2]["prompt"]) in page, "ann continues at item 2"
    status, page, _ = fake_server.request("GET", urls["ann2"] + "?annotator=ann", who=None)
    assert _shown_annotator(page) == "ann2"
    assert "1 of 4 labeled" in page and html.escape(items[1]["prompt"]) in page, "ann2 continues at item 1"
    status, state, _ = fake_server.request("GET", f"/v1/campaigns/{campaign['id']}")
    assert state["progress"] == {"items": 4, "labeled": 2, "labels": 4, "annotators": ["ann", "ann2", "ann3"],
                                 "links": ["ann", "ann2", "ann3"]}

    store = JobStore.open(fake_server.service_dir / "service.sqlite")
    try:
        gold = campaign_gold(store, ServiceSettings(service_dir=fake_server.service_dir), campaign["id"])
    finally:
        store.close()
    assert [(g.id, g.prompt, g.response_a, g.response_b) for g in gold] == [
        (i["pair_id"], i["prompt"], i["response_1"], i["response_2"]) for i in items[:2]]
    assert (gold[0].label, sorted(gold[0].annotators)) == ("tie", ["A", "B", "tie"]), "three-way split: a tie"
    assert (gold[1].label, gold[1].annotators) == ("A", []), "one annotator: no per-annotator list"


def test_the_audit_is_one_click_away_and_reruns_only_on_new_labels(fake_server: Server, fake_batch: dict):
    campaign = _create(fake_server, fake_batch["id"], n=3, annotators=["ann", "ann2"])
    url, items = campaign["label_url"], _items(fake_server, campaign["id"])
    status, reply, _ = fake_server.request("POST", f"{url}/audit", who=None)
    assert status == 409 and reply["error"]["code"] == "nothing_labeled"
    _label(fake_server, url, items[0]["item_id"], "left")
    status, started, _ = fake_server.request("POST", f"{url}/audit", who=None)
    assert status == 200 and started["status"] in ("queued", "running", "completed")
    first = started["audit_id"]
    state = _audit_done(fake_server, url)
    assert (state["status"], state["audit_id"], state["result"]["n_items"]) == ("completed", first, 1), state
    assert fake_server.request("POST", f"{url}/audit", who=None)[1]["audit_id"] == first, "same labels: same audit"
    assert fake_server.request("GET", f"/v1/campaigns/{campaign['id']}")[1]["audit_id"] == first
    other = campaign["label_urls"]["ann2"]
    assert fake_server.request("GET", f"{other}/audit", who=None)[1]["audit_id"] == first, "one audit per campaign"
    status, report, headers = fake_server.request("GET", state["report_url"], who=None)
    assert status == 200 and "Judge audit" in report
    assert {k.lower(): v for k, v in headers.items()}["referrer-policy"] == "no-referrer"
    for item in items[1:]:
        _label(fake_server, url, item["item_id"], "tie")
    status, page, _ = fake_server.request("GET", url, who=None)
    assert "3 of 3 labeled" in page and 'id="run-audit"' in page and f'data-audit="{first}"' in page
    status, page, _ = fake_server.request("GET", other, who=None)
    assert "0 of 3 labeled" in page and 'id="run-audit"' not in page, "ann2 has labeled nothing yet"
    second = fake_server.request("POST", f"{url}/audit", who=None)[1]["audit_id"]
    assert second != first, "more labeled items than the last audit saw: a new audit"
    state = _audit_done(fake_server, url)
    assert (state["status"], state["audit_id"], state["result"]["n_items"]) == ("completed", second, 3)
    status, audit, _ = fake_server.request("GET", f"/v1/audits/{second}")
    assert status == 200 and audit["request"]["campaign_id"] == campaign["id"]
    assert fake_server.request("GET", f"/v1/audits/{second}", who="bob")[0] == 404, "the audit is the campaign owner's"


# the real thing: the embedded model's batch, labeled in headless Chromium ---------------------------------
def _install(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        pytest.skip(f"cannot install {what} ({' '.join(command)} exited {done.returncode}): {done.stderr[-500:]}")


def _browser_tools() -> Any:
    """selenium's webdriver, with Chromium and chromedriver installed first when missing (CI runs as root)."""
    if shutil.which("chromedriver") is None or shutil.which("chromium") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("Chromium and chromedriver are missing and cannot be installed here (needs root and apt-get): "
                        "apt-get install chromium chromium-driver")
        _install(["apt-get", "update"], "Chromium")
        _install(["apt-get", "install", "-y", "chromium", "chromium-driver"], "Chromium")
    try:
        from selenium import webdriver
    except ImportError:
        _install([sys.executable, "-m", "pip", "install", "selenium>=4.20"], "selenium")
        from selenium import webdriver
    return webdriver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    webdriver = _browser_tools()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
    yield driver
    driver.quit()


class LabelingPage:
    """The labeling page in the browser, read and driven by its element ids."""

    def __init__(self, driver: Any):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.by = driver, By
        # a choice reloads the page: elements vanish or go stale while the next one loads
        self.wait = lambda timeout=60: WebDriverWait(driver, timeout, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException))

    def text(self, element_id: str) -> str:
        return self.driver.find_element(self.by.ID, element_id).get_attribute("textContent")

    def shown(self) -> tuple[str, str, str]:
        return self.text("prompt"), self.text("left"), self.text("right")

    def markup_elements(self) -> list:
        """Elements inside the text boxes: a text shown as markup would make some."""
        return self.driver.find_elements(self.by.CSS_SELECTOR, "#prompt *, #left *, #right *")

    def wait_progress(self, done: int, total: int) -> None:
        self.wait().until(lambda d: self.text("progress") == f"{done} of {total} labeled")

    def press(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()

    def click(self, element_id: str) -> None:
        self.driver.find_element(self.by.ID, element_id).click()


@pytest.fixture(scope="module")
def real_batch(real_service: Server) -> dict:
    batch = _finished_batch(real_service, _pairs_file(HTML_PAIRS))
    assert batch["status"] == "completed", batch
    return batch


@pytest.mark.vllm
def test_a_person_labels_a_campaign_in_the_browser_and_runs_the_audit(real_service: Server, real_batch: dict, browser):
    from selenium.webdriver.common.keys import Keys

    campaign = _create(real_service, real_batch["id"], n=8, annotators=["tester", "second"])
    mine, theirs = campaign["label_urls"]["tester"], campaign["label_urls"]["second"]
    total = campaign["progress"]["items"]
    assert total >= 3, f"the model labeled too few pairs to sample: {campaign}"
    assert real_service.request("GET", f"/v1/campaigns/{campaign['id']}", who="bob")[0] == 404
    assert real_service.request("POST", "/v1/campaigns", {"batch_id": real_batch["id"]}, who=None)[0] == 401
    assert real_service.request("GET", "/label/" + "y" * 43, who=None)[0] == 404
    pairs = {p: (r1, r2) for p, r1, r2 in HTML_PAIRS}
    page = LabelingPage(browser)
    browser.get(real_service.url + mine + "?annotator=second")  # a query cannot switch the link's annotator
    page.wait_progress(0, total)
    assert page.text("annotator") == "tester", "the page shows the link's annotator"
    assert browser.find_elements(page.by.CSS_SELECTOR, "input, textarea, select") == [], "no name field"

    # (how, what, choice): keyboard shortcuts and buttons, each choice both ways
    plan = [("key", "1", "left"), ("button", "btn-left", "left"), ("key", "t", "tie"), ("button", "btn-right", "right"),
            ("key", "2", "right"), ("button", "btn-tie", "tie"), ("key", Keys.ARROW_DOWN, "tie"),
            ("key", Keys.ARROW_LEFT, "left")]
    expected: dict[str, str] = {}
    seen_prompts: list[str] = []
    flips: list[bool] = []
    for k, (how, what, choice) in zip(range(total), plan):
        if k == 2:
            browser.refresh()
            page.wait_progress(2, total)
        prompt, left, right = page.shown()
        assert prompt in pairs and prompt not in seen_prompts, "a new item of the batch (a reload resumes, never repeats)"
        r1, r2 = pairs[prompt]
        assert {left, right} == {r1, r2}
        assert page.markup_elements() == [], "texts are shown as text, not markup"
        flips.append(left == r2)
        seen_prompts.append(prompt)
        expected[prompt] = "tie" if choice == "tie" else ("B" if (choice == "left") == (left == r2) else "A")
        if how == "key":
            page.press(what)
        else:
            page.click(what)
        page.wait_progress(k + 1, total)
    assert flips[:2] == [False, True], "the seeded coin showed item 1 swapped: its left was response_2"
    assert expected[seen_prompts[0]] == "A" and expected[seen_prompts[1]] == "B", "left is A, but B on a swap"
    assert any("<script>" in r1 + r2 or "<b>" in r1 + r2 for p in seen_prompts for r1, r2 in [pairs[p]])
    assert browser.execute_script("return window.__pwned === undefined"), "no text ran as script"

    page.click("run-audit")
    page.wait(600).until(lambda d: d.find_element(page.by.ID, "report-link").is_displayed())
    assert page.text("audit-status") == "Audit finished."
    page.click("report-link")
    page.wait().until(lambda d: "Judge audit" in d.page_source)
    assert "accuracy_no_ties" in browser.page_source
    browser.get(real_service.url + theirs)  # the other annotator's link: their own name and progress
    page.wait_progress(0, total)
    assert page.text("annotator") == "second" and page.shown()[0] == seen_prompts[0], "second starts at the first item"
    browser.get(real_service.url + mine)  # back on tester's link: all done, the finished audit's report
    page.wait_progress(total, total)
    assert page.text("annotator") == "tester"
    page.wait().until(lambda d: d.find_element(page.by.ID, "report-link").is_displayed())
    assert browser.execute_script("return window.localStorage.length") == 0, "the page keeps no name in the browser"

    items = {i["item_id"]: i for i in _items(real_service, campaign["id"])}
    labels = _labels(real_service, campaign["id"])
    assert {who for _, who in labels} == {"tester"}, "every label is the link's annotator's"
    assert {items[item_id]["prompt"]: label for (item_id, _), label in labels.items()} == expected
    state = real_service.request("GET", f"/v1/campaigns/{campaign['id']}")[1]
    assert state["progress"]["labeled"] == total and state["audit_id"]
    status, audit, _ = real_service.request("GET", f"/v1/audits/{state['audit_id']}")
    assert status == 200 and audit["status"] == "completed" and audit["result"]["n_items"] == total, audit
    status, metrics, _ = real_service.request("GET", f"/v1/audits/{state['audit_id']}/metrics.json")
    assert status == 200 and metrics["n_gold"] == total
