"""`Client` and `AsyncClient`: the synchronous routes of `rlaif serve` over httpx.

Each method sends one request per `max_items` inputs (the service's per-request cap, 64 by default) and returns
the replies joined in input order, as plain dicts in the service's JSON shapes. A 413 (too many items or too
large a body for this server) splits the request in halves and tries again. 429 (after its Retry-After),
502, 503, 504 and connection failures are retried with exponential backoff, up to `max_retries` times; any
other error raises `ServiceError` with the service's status, code and message.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx

from rlaif.errors import RlaifError

__all__ = ["Client", "AsyncClient", "ServiceError", "KEY_ENV", "RETRY_STATUSES"]

KEY_ENV = "RLAIF_API_KEY"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Transport failures worth another try: the connection never got a reply. A read timeout is not retried
# (the service is busy with this very request; sending it again only adds to the queue).
_RETRY_EXCEPTIONS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                     httpx.RemoteProtocolError, httpx.PoolTimeout)
_PAIR_FIELDS = ("id", "prompt", "response_1", "response_2")
_ITEM_FIELDS = ("id", "prompt", "response")

Body = dict[str, Any]


class ServiceError(RlaifError):
    """The service answered with an error (or could not be reached: `status` is None then).

    `message`, `code`, `type` and `param` are the service's own `{"error": {...}}` fields when it sent them.
    """

    def __init__(self, status: int | None, message: str, code: str | None = None, type: str | None = None,
                 param: str | None = None, retry_after: float | None = None):
        self.status, self.message, self.code, self.type, self.param = status, message, code, type, param
        self.retry_after = retry_after
        where = "no reply" if status is None else f"HTTP {status}"
        super().__init__(f"rlaif service: {where}{f' ({code})' if code else ''}: {message}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServiceError:
        error: Any = None
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            pass
        retry_after = _retry_after(response)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return cls(response.status_code, error["message"], error.get("code"), error.get("type"), error.get("param"),
                       retry_after)
        text = response.text.strip()[:500] or response.reason_phrase
        return cls(response.status_code, text, retry_after=retry_after)


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServiceError(response.status_code, f"the reply is not JSON: {response.text[:200]!r}",
                           code="invalid_reply") from None


def _pick(value: Any, fields: tuple[str, ...], index: int, what: str) -> Body:
    """One pair/item as the API's dict: from a mapping, an object with those attributes (e.g. rlaif's
    CandidatePair), or a tuple of the texts in order (without the id). A missing id becomes its position."""
    if isinstance(value, Mapping):
        out = {f: value[f] for f in fields if value.get(f) is not None}
    elif isinstance(value, (tuple, list)):
        texts = fields[1:]
        if len(value) != len(texts):
            raise ValueError(f"{what} {index}: a tuple needs {len(texts)} texts ({', '.join(texts)}), got {len(value)}")
        out = dict(zip(texts, value))
    else:
        out = {f: getattr(value, f) for f in fields if getattr(value, f, None) is not None}
    missing = [f for f in fields[1:] if f not in out]
    if missing:
        raise ValueError(f"{what} {index} has no {', '.join(missing)}")
    out["id"] = str(out.get("id", index))
    return out


def _same_length(prompts: Sequence[str], completions: Sequence[str], references: Sequence[str] | None) -> None:
    if len(prompts) != len(completions) or (references is not None and len(references) != len(completions)):
        raise ValueError(f"one prompt{' and one reference' if references is not None else ''} per completion: got "
                         f"{len(prompts)} prompts, {len(completions)} completions"
                         + (f", {len(references)} references" if references is not None else ""))


def _merge_judged(kind: str, judge: str | None, replies: list[Body]) -> Body:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    for reply in replies:
        for key in usage:
            usage[key] += reply.get("usage", {}).get(key, 0)
    return {"object": f"judge.{kind}", "judge": replies[0]["judge"] if replies else judge,
            "results": [r for reply in replies for r in reply["results"]], "usage": usage}


def _merge_rewards(judge: str | None, references: bool, replies: list[Body]) -> Body:
    first = replies[0] if replies else {"judge": judge, "kind": "pairwise_vs_reference" if references else "pointwise_score"}
    return {"object": "reward", "judge": first["judge"], "kind": first["kind"],
            "rewards": [x for reply in replies for x in reply["rewards"]],
            "reasons": [x for reply in replies for x in reply["reasons"]]}


class _Settings:
    """What both clients share: the address, the key, the limits, and the request bodies."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 300.0, max_retries: int = 5,
                 max_items: int = 64, backoff: float = 0.5, max_wait: float = 60.0):
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV) or None
        self.timeout, self.max_retries, self.max_items = timeout, max_retries, max_items
        self.backoff, self.max_wait = backoff, max_wait

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "rlaif-client"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))

    def _wait(self, attempt: int, error: ServiceError | None) -> float:
        """Seconds before try `attempt + 1`: the server's Retry-After when it sent one, else exponential backoff
        with jitter; at most max_wait."""
        if error is not None and error.retry_after is not None:
            return min(error.retry_after, self.max_wait)
        return min(self.backoff * 2 ** attempt * (1 + random.random() / 4), self.max_wait)

    @staticmethod
    def _retryable(error: ServiceError) -> bool:
        return error.status in RETRY_STATUSES or error.code == "connection_error"

    def _failure(self, exc: httpx.HTTPError, path: str) -> ServiceError:
        """A request that got no reply, as a ServiceError (code connection_error is retried, the rest not)."""
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, _RETRY_EXCEPTIONS):
            return ServiceError(None, f"cannot reach {self.base_url} ({what})", code="connection_error")
        if isinstance(exc, httpx.TimeoutException):
            return ServiceError(None, f"no reply from {self.base_url}{path} within {self.timeout} s; raise timeout= or "
                                      "send fewer items per call", code="timeout")
        return ServiceError(None, f"{self.base_url}{path}: {what}", code="request_failed")

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.max_items, n)) for a in range(0, n, self.max_items)]

    @staticmethod
    def _pairs_body(pairs: Sequence[Any], judge: str | None) -> tuple[int, Callable[[int, int], Body]]:
        rows = [_pick(p, _PAIR_FIELDS, i, "pair") for i, p in enumerate(pairs)]
        return len(rows), lambda a, b: {"judge": judge, "pairs": rows[a:b]}

    @staticmethod
    def _items_body(items: Sequence[Any], judge: str | None) -> tuple[int, Callable[[int, int], Body]]:
        rows = [_pick(p, _ITEM_FIELDS, i, "item") for i, p in enumerate(items)]
        return len(rows), lambda a, b: {"judge": judge, "items": rows[a:b]}

    @staticmethod
    def _reward_body(prompts: Sequence[str], completions: Sequence[str], references: Sequence[str] | None,
                     judge: str | None) -> tuple[int, Callable[[int, int], Body]]:
        _same_length(prompts, completions, references)
        prompts, completions = list(prompts), list(completions)
        refs = None if references is None else list(references)
        return len(completions), lambda a, b: {"judge": judge, "prompts": prompts[a:b], "completions": completions[a:b],
                                               "references": None if refs is None else refs[a:b]}


def _no_nones(body: Body) -> Body:
    return {k: v for k, v in body.items() if v is not None}


class Client(_Settings):
    """A synchronous client of `rlaif serve`.

        with Client("http://127.0.0.1:8000") as client:     # key from RLAIF_API_KEY, or api_key=...
            reply = client.judge_pairwise([{"prompt": "...", "response_1": "...", "response_2": "..."}])
            reply["results"][0]["label"]

    `timeout` is per request (seconds); `max_items` inputs go in one request; `max_retries` more tries on 429,
    502/503/504 and connection failures.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 300.0, max_retries: int = 5,
                 max_items: int = 64, backoff: float = 0.5, max_wait: float = 60.0, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, max_items=max_items,
                         backoff=backoff, max_wait=max_wait)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers(), timeout=self._httpx_timeout(),
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Body | None = None) -> Any:
        """One call with the retries; the reply's JSON. Raises ServiceError."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=None if body is None else _no_nones(body))
                if response.is_success:
                    return _json(response)
                error = ServiceError.from_response(response)
            except httpx.HTTPError as exc:
                error = self._failure(exc, path)
            if attempt >= self.max_retries or not self._retryable(error):
                raise error
            time.sleep(self._wait(attempt, error))
            attempt += 1

    def _post_split(self, path: str, body: Callable[[int, int], Body], a: int, b: int) -> list[Body]:
        try:
            return [self.request("POST", path, body(a, b))]
        except ServiceError as exc:
            if exc.status != 413 or b - a < 2:
                raise
        mid = (a + b) // 2
        return self._post_split(path, body, a, mid) + self._post_split(path, body, mid, b)

    def _post_all(self, path: str, n: int, body: Callable[[int, int], Body]) -> list[Body]:
        return [reply for a, b in self._chunks(n) for reply in self._post_split(path, body, a, b)]

    def health(self) -> Body:
        """GET /health: {"status", "judges", "queue"} (no key needed)."""
        return self.request("GET", "/health")

    def judges(self) -> list[Body]:
        """GET /v1/judges: one dict per judge ({"id", "mode", "description", "model", ...})."""
        return self.request("GET", "/v1/judges")["data"]

    def judge_pairwise(self, pairs: Sequence[Any], judge: str | None = None) -> Body:
        """Judge pairs (dicts {prompt, response_1, response_2, id?}, (prompt, response_1, response_2) tuples, or
        CandidatePairs): {"judge", "results": one per pair in order, "usage"}. A pair without an id gets its
        position ("0", "1", ...) as `pair_id`."""
        n, body = self._pairs_body(pairs, judge)
        return _merge_judged("pairwise", judge, self._post_all("/v1/judge/pairwise", n, body))

    def judge_pointwise(self, items: Sequence[Any], judge: str | None = None) -> Body:
        """Score responses (dicts {prompt, response, id?} or (prompt, response) tuples): {"judge", "results", "usage"}."""
        n, body = self._items_body(items, judge)
        return _merge_judged("pointwise", judge, self._post_all("/v1/judge/pointwise", n, body))

    def reward(self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str] | None = None,
               judge: str | None = None) -> Body:
        """One reward per completion: {"judge", "kind", "rewards": [float | None], "reasons": [str | None]}.
        With references, a pairwise judge's P(completion better than its reference); without, a pointwise
        judge's score. None (with its reason) where the judge gave no verdict."""
        n, body = self._reward_body(prompts, completions, references, judge)
        return _merge_rewards(judge, references is not None, self._post_all("/v1/reward", n, body))


class AsyncClient(_Settings):
    """The asynchronous twin of `Client` (same methods, awaited); a request's chunks go out concurrently, at
    most `max_concurrency` at a time.

        async with AsyncClient("http://127.0.0.1:8000") as client:
            reply = await client.reward(prompts, completions, references)
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 300.0, max_retries: int = 5,
                 max_items: int = 64, backoff: float = 0.5, max_wait: float = 60.0, max_concurrency: int = 8,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries, max_items=max_items,
                         backoff=backoff, max_wait=max_wait)
        self.max_concurrency = max_concurrency
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=self._httpx_timeout(),
                                       transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, body: Body | None = None) -> Any:
        """One call with the retries; the reply's JSON. Raises ServiceError."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, json=None if body is None else _no_nones(body))
                if response.is_success:
                    return _json(response)
                error = ServiceError.from_response(response)
            except httpx.HTTPError as exc:
                error = self._failure(exc, path)
            if attempt >= self.max_retries or not self._retryable(error):
                raise error
            await asyncio.sleep(self._wait(attempt, error))
            attempt += 1

    async def _post_split(self, path: str, body: Callable[[int, int], Body], a: int, b: int,
                          gate: asyncio.Semaphore) -> list[Body]:
        try:
            async with gate:
                return [await self.request("POST", path, body(a, b))]
        except ServiceError as exc:
            if exc.status != 413 or b - a < 2:
                raise
        mid = (a + b) // 2
        return await self._post_split(path, body, a, mid, gate) + await self._post_split(path, body, mid, b, gate)

    async def _post_all(self, path: str, n: int, body: Callable[[int, int], Body]) -> list[Body]:
        gate = asyncio.Semaphore(self.max_concurrency)
        calls: list[Awaitable[list[Body]]] = [self._post_split(path, body, a, b, gate) for a, b in self._chunks(n)]
        return [reply for replies in await asyncio.gather(*calls) for reply in replies]

    async def health(self) -> Body:
        return await self.request("GET", "/health")

    async def judges(self) -> list[Body]:
        return (await self.request("GET", "/v1/judges"))["data"]

    async def judge_pairwise(self, pairs: Sequence[Any], judge: str | None = None) -> Body:
        n, body = self._pairs_body(pairs, judge)
        return _merge_judged("pairwise", judge, await self._post_all("/v1/judge/pairwise", n, body))

    async def judge_pointwise(self, items: Sequence[Any], judge: str | None = None) -> Body:
        n, body = self._items_body(items, judge)
        return _merge_judged("pointwise", judge, await self._post_all("/v1/judge/pointwise", n, body))

    async def reward(self, prompts: Sequence[str], completions: Sequence[str], references: Sequence[str] | None = None,
                     judge: str | None = None) -> Body:
        n, body = self._reward_body(prompts, completions, references, judge)
        return _merge_rewards(judge, references is not None, await self._post_all("/v1/reward", n, body))
