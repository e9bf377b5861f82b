"""An rlaif judge as OpenRLHF's reward: give this file to OpenRLHF as `--remote_rm_url`.

OpenRLHF's own HTTP reward client sends no headers, so it cannot pass a service's API key. Given a `.py` file
instead of a URL, OpenRLHF loads it and calls its `reward_func(queries, prompts, labels)`; this one posts
them to `rlaif serve`'s /get_reward with `Authorization: Bearer $RLAIF_API_KEY` and returns
{"rewards": tensor, "scores": tensor, "extra_logs": {...}} as OpenRLHF expects. It imports only the standard
library (and torch, when called), so it runs wherever OpenRLHF does, without rlaif installed.

    # where OpenRLHF runs (a Ray cluster: pass the variables in --runtime-env-json's "env_vars")
    export RLAIF_URL=http://judge-host:8000          # default http://127.0.0.1:8000
    export RLAIF_API_KEY=...                          # a key of the service (RLAIF_API_KEYS on its side)
    cp "$(python -c 'import rlaif.client.openrlhf_reward as m; print(m.__file__)')" ./rlaif_reward.py
    python -m openrlhf.cli.train_ppo_ray ... --remote_rm_url ./rlaif_reward.py --label_key reference

With `--label_key` (a column of reference responses) each reward is the service's pairwise judge's probability
that the response is better than its reference; without labels, its pointwise judge's score. The response is
what follows the prompt in each query.

A response the judge gives no verdict for has no reward. It is NaN by default, never a silent 0: OpenRLHF does
not skip NaN rewards the way TRL does, so it will show in the training logs. To train on regardless, choose a
value explicitly with RLAIF_MISSING_REWARD (e.g. 0.5, the judge's tie). Either way extra_logs carries
`rlaif_missing_rewards`, the number of responses without a verdict in the call.

Other settings: RLAIF_TIMEOUT (seconds per request, default 300), RLAIF_MAX_ITEMS (responses per request,
default 64, the service's cap), RLAIF_MAX_RETRIES (default 5; 429 after its Retry-After, 502/503/504 and
connection failures are retried with backoff).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["reward_func", "fetch_rewards", "missing_fill"]

URL_ENV, KEY_ENV, FILL_ENV = "RLAIF_URL", "RLAIF_API_KEY", "RLAIF_MISSING_REWARD"
DEFAULT_URL = "http://127.0.0.1:8000"
_RETRY = {429, 502, 503, 504}


class RewardServiceError(RuntimeError):
    """The service refused the request, or could not be reached after the retries."""

    def __init__(self, status: int | None, message: str):
        self.status, self.message = status, message
        super().__init__(f"rlaif /get_reward: {'no reply' if status is None else f'HTTP {status}'}: {message}")


def missing_fill() -> float:
    """The reward of a response without a verdict: RLAIF_MISSING_REWARD if set, else NaN."""
    text = os.environ.get(FILL_ENV, "").strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{FILL_ENV}={text!r} is not a number; set it to the reward a response without a verdict "
                         "should get (e.g. 0.5), or unset it for NaN") from None


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


def _post(url: str, body: dict, key: str | None, timeout: float, retries: int) -> dict:
    data = json.dumps(body, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "rlaif-openrlhf-reward"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    attempt = 0
    while True:
        wait: float | None = None
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method="POST"),
                                        timeout=timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text.strip()[:500] or str(exc.reason)
            error = RewardServiceError(exc.code, message)
            if exc.code not in _RETRY:
                raise error from None
            after = (exc.headers.get("Retry-After") or "").strip()
            wait = float(after) if after.replace(".", "", 1).isdigit() else None
        except (urllib.error.URLError, ConnectionError) as exc:
            error = RewardServiceError(None, f"cannot reach {url}: {exc}")
        if attempt >= retries:
            raise error
        time.sleep(min(60.0, wait if wait is not None else 0.5 * 2 ** attempt * (1 + random.random() / 4)))
        attempt += 1


def fetch_rewards(queries: list[str], prompts: list[str], labels: list[Any] | None = None) -> tuple[list[float | None],
                                                                                                      list[str | None]]:
    """(rewards, reasons) from the service's /get_reward: None with its reason where there is no verdict.
    A query that does not start with its prompt (the response cannot be cut from it) gets None, not a request."""
    if len(prompts) != len(queries) or (labels is not None and len(labels) != len(queries)):
        raise ValueError(f"one prompt and label per query: got {len(queries)} queries, {len(prompts)} prompts"
                         + ("" if labels is None else f", {len(labels)} labels"))
    url = os.environ.get(URL_ENV, DEFAULT_URL).rstrip("/") + "/get_reward"
    key = os.environ.get(KEY_ENV) or None
    timeout, retries = _env_number("RLAIF_TIMEOUT", 300.0), int(_env_number("RLAIF_MAX_RETRIES", 5))
    size = max(1, int(_env_number("RLAIF_MAX_ITEMS", 64)))
    rewards: list[float | None] = [None] * len(queries)
    reasons: list[str | None] = ["the query does not start with its prompt"] * len(queries)
    todo = [i for i, (q, p) in enumerate(zip(queries, prompts)) if q.startswith(p)]

    def send(part: list[int]) -> None:
        body: dict[str, Any] = {"query": [queries[i] for i in part], "prompts": [prompts[i] for i in part]}
        if labels is not None:
            body["labels"] = [labels[i] for i in part]
        try:
            reply = _post(url, body, key, timeout, retries)
        except RewardServiceError as exc:
            if exc.status == 413 and len(part) > 1:  # more than this server takes at once: halve
                send(part[: len(part) // 2])
                send(part[len(part) // 2:])
                return
            raise
        got, why = reply.get("rewards"), reply.get("reasons") or [None] * len(part)
        if not isinstance(got, list) or len(got) != len(part):
            raise RewardServiceError(200, f"expected {len(part)} rewards, got {str(got)[:200]}")
        for i, value, reason in zip(part, got, why):
            rewards[i] = None if value is None else float(value)
            reasons[i] = None if value is not None else (reason or "no verdict")

    for start in range(0, len(todo), size):
        send(todo[start:start + size])
    return rewards, reasons


def reward_func(queries: list[str], prompts: list[str], labels: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """What OpenRLHF calls: {"rewards", "scores" (float32 tensors, one value per query), "extra_logs"}."""
    import torch

    fill = missing_fill()
    rewards, _ = fetch_rewards(list(queries), list(prompts), None if labels is None else list(labels))
    values = torch.tensor([fill if r is None else r for r in rewards], dtype=torch.float32)
    missing = sum(r is None for r in rewards)
    return {"rewards": values, "scores": values.clone(),
            "extra_logs": {"rlaif_missing_rewards": torch.tensor(float(missing), dtype=torch.float32)}}
