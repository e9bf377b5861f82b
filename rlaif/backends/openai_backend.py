"""A hosted OpenAI-compatible chat API as a backend: OpenAI itself, a vLLM server, a router in front of many,
or a fleet of servers (`base_urls`) that the backend spreads requests over itself.

Requests run on a thread pool of `max_concurrency`. The SDK's own retries are off; each request is retried
here with tenacity (exponential backoff with jitter, or the server's `Retry-After`) on the failures that
may pass: 429, 5xx, timeouts, dropped connections and malformed responses. Other 4xx are not retried.
Every request has a total time budget (`item_budget_s`); a request that runs out of attempts or budget
comes back as a `Completion` with `error` saying why, so the judge records the item as unlabeled.

With several servers (`ServerFleet`), each attempt goes to a healthy server with the fewest requests in flight
(ties taken in turn). A server that drops a connection, times out or answers 5xx or 429 is skipped for
`server_cooldown_s` (or its Retry-After) while others are healthy, then tried again. A failed attempt is retried
at once, without a backoff wait, on a healthy server the request has not failed on; only when none is left does
the request back off as it would with one server. Attempts and budget are per request across all servers, so a
request comes back with an error only when the servers it tried all failed it within them. `stats().servers`
counts the requests each server answered.

The API key is read from the environment variable that `api_key_env` names. Only that name appears in
configs, manifests and `repr`; the key is scrubbed from every error message.
"""

from __future__ import annotations

import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from rlaif.backends.base import BackendBase, Choice, Completion, CompletionRequest
from rlaif.config.backend import OpenAIBackendConfig
from rlaif.errors import BackendError

__all__ = ["OpenAIBackend", "ServerFleet", "AttemptError", "classify_error"]

KEYLESS = "EMPTY"
"""The key sent to servers that need none (the SDK insists on some key)."""
MIN_ATTEMPT_S = 0.05
"""Below this much budget left, no new attempt is started."""
MARKS_DOWN = frozenset({"connection", "timeout", "server_error", "rate_limit"})
"""Failures that make a server cool down (a malformed body or a 4xx says nothing about its health)."""


class AttemptError(Exception):
    """One failed attempt, classified: `kind` is what the stats count, `retryable` whether to try again."""

    def __init__(self, kind: str, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retryable, self.retry_after = kind, message, retryable, retry_after


def _retry_after(response) -> float | None:
    """Seconds from a `Retry-After` header (the HTTP-date form is ignored: backoff applies)."""
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify_error(exc: BaseException) -> AttemptError:
    """Map an SDK or parsing exception onto a retry decision."""
    import openai

    if isinstance(exc, AttemptError):
        return exc
    if isinstance(exc, openai.APITimeoutError):  # before APIConnectionError, its base class
        return AttemptError("timeout", f"timeout: {exc}", True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return AttemptError("connection", f"connection error: {type(cause).__name__}: {cause}", True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = _short(re.sub(r"^Error code: \d+ - ", "", exc.message))
        if status == 429:
            after = _retry_after(exc.response)
            hint = f" (Retry-After {after:g} s)" if after is not None else ""
            return AttemptError("rate_limit", f"429 rate limited{hint}: {body}", True, after)
        if status >= 500:
            return AttemptError("server_error", f"{status} server error: {body}", True, _retry_after(exc.response))
        if status == 408:
            return AttemptError("timeout", f"408 request timeout: {body}", True, _retry_after(exc.response))
        return AttemptError("client_error", f"{status} client error (not retried): {body}", False)
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError, openai.APIResponseValidationError)):
        # json.JSONDecodeError is a ValueError; a response missing its fields fails while being read
        return AttemptError("malformed", f"malformed response: {type(exc).__name__}: {_short(str(exc))}", True)
    return AttemptError("unexpected", f"{type(exc).__name__}: {_short(str(exc))}", False)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(eq=False)
class _Server:
    index: int
    url: str
    client: Any
    in_flight: int = 0
    down_until: float = -math.inf
    """Cooling down (skipped while others are healthy) until this time on the fleet's clock."""


class ServerFleet:
    """The servers of one backend and their health. Thread-safe: each attempt `take`s a server and gives it back."""

    def __init__(self, urls: list[str], make_client: Callable[[str], Any], cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.servers = [_Server(i, url, make_client(url)) for i, url in enumerate(urls)]
        self.cooldown_s, self._clock = cooldown_s, clock
        self._turn = 0
        self._lock = threading.Lock()

    def take(self, failed_on: Collection[str] = ()) -> _Server:
        """The server for the next attempt: a healthy one the request has not failed on, else any healthy one, else
        the one that comes back soonest; among those the one with the fewest in flight, ties taken in turn."""
        with self._lock:
            now = self._clock()
            healthy = [s for s in self.servers if s.down_until <= now]
            candidates = ([s for s in healthy if s.url not in failed_on] or healthy
                          or [min(self.servers, key=lambda s: s.down_until)])
            turn, n = self._turn, len(self.servers)
            self._turn += 1
            server = min(candidates, key=lambda s: (s.in_flight, (s.index - turn) % n))
            server.in_flight += 1
            return server

    def give_back(self, server: _Server, failure: AttemptError | None) -> None:
        """After an attempt: an answer makes the server healthy, a failure in MARKS_DOWN makes it cool down."""
        with self._lock:
            server.in_flight -= 1
            if failure is None:
                server.down_until = -math.inf
            elif failure.kind in MARKS_DOWN:
                pause = failure.retry_after if failure.retry_after is not None else self.cooldown_s
                server.down_until = max(server.down_until, self._clock() + pause)

    def can_fail_over(self, failed_on: Collection[str]) -> bool:
        """Whether a healthy server is left that the request has not failed on."""
        with self._lock:
            now = self._clock()
            return any(s.down_until <= now and s.url not in failed_on for s in self.servers)

    def close(self) -> None:
        for server in self.servers:
            server.client.close()


@dataclass
class _Progress:
    """What one request has been through so far."""

    started: float
    attempts: int = 0
    last: AttemptError | None = None
    failed_on: set[str] = field(default_factory=set)
    """Servers the request has failed on."""
    fail_over: bool = False
    """The last failure is retried at once on another healthy server, without a backoff wait."""
    server: str | None = None
    """The server of the last attempt."""


class OpenAIBackend(BackendBase):
    """Chat completions over the `openai` SDK, with bounded concurrency, retries and a per-request budget."""

    name = "openai"

    def __init__(self, config: OpenAIBackendConfig, sleep=time.sleep):
        """`sleep` waits between attempts (tests pass a recorder to check the waits without waiting)."""
        import openai

        super().__init__()
        self.config = config
        self._sleep = sleep
        self.model = config.model
        self._key = _read_key(config.api_key_env)
        self._fleet = ServerFleet(config.urls, lambda url: openai.OpenAI(api_key=self._key, base_url=url, max_retries=0,
                                                                          timeout=config.timeout_s),
                                  config.server_cooldown_s)
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="rlaif-openai")

    def __repr__(self) -> str:
        c = self.config
        where = f"base_url={c.base_url!r}" if c.base_urls is None else f"base_urls={c.base_urls!r}"
        return f"OpenAIBackend(model={c.model!r}, {where}, api_key_env={c.api_key_env!r})"

    def complete(self, requests: list[CompletionRequest]) -> list[Completion]:
        return list(self._pool.map(self._complete_one, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._fleet.close()

    # -- one request -------------------------------------------------------------------------------------

    def _complete_one(self, request: CompletionRequest) -> Completion:
        progress = _Progress(started=time.monotonic())
        failure = None
        try:
            completion = self._retrying(progress)(self._attempt, request, progress)
        except AttemptError as exc:
            message = self._give_up_message(exc, progress)
            if len(self._fleet.servers) > 1 and progress.server:
                message += f" (last server {progress.server})"
            completion = Completion(error=self._scrub(message))
            failure = exc.kind
        completion.latency_s = time.monotonic() - progress.started
        answered_by = None if failure else progress.server
        self._count_request(completion, attempts=progress.attempts, failure=failure, server=answered_by)
        return completion

    def _retrying(self, progress: _Progress) -> Retrying:
        c = self.config

        def hint(state: RetryCallState) -> float | None:
            """No wait when failing over to another server; else the server's Retry-After, if any."""
            if progress.fail_over:
                return 0.0
            return getattr(state.outcome.exception(), "retry_after", None)

        def wait(state: RetryCallState) -> float:
            hinted = hint(state)
            if hinted is None:  # exponential, with "equal jitter": half fixed, half random
                ceiling = min(c.backoff_max_s, c.backoff_initial_s * 2 ** (state.attempt_number - 1))
                hinted = ceiling * random.uniform(0.5, 1.0)
            return min(hinted, self._remaining(progress))

        def out_of_budget(state: RetryCallState) -> bool:
            return self._remaining(progress) - (hint(state) or 0.0) < MIN_ATTEMPT_S

        def before_sleep(state: RetryCallState) -> None:
            self._count_retry(state.outcome.exception().kind)

        return Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, AttemptError) and e.retryable),
            stop=stop_after_attempt(c.max_attempts) | out_of_budget,
            wait=wait, before_sleep=before_sleep, sleep=self._sleep, reraise=True,
        )

    def _attempt(self, request: CompletionRequest, progress: _Progress) -> Completion:
        remaining = self._remaining(progress)
        if remaining < MIN_ATTEMPT_S:
            raise AttemptError("budget", "no budget left for another attempt", False)
        progress.attempts += 1
        server = self._fleet.take(progress.failed_on)
        progress.server = server.url
        try:
            response = server.client.chat.completions.create(**_chat_params(self.config, request),
                                                             timeout=min(self.config.timeout_s, remaining))
            completion = self._to_completion(response)
        except Exception as exc:  # every failure is classified; none escapes as an exception
            progress.last = classify_error(exc)
            self._fleet.give_back(server, progress.last)
            progress.failed_on.add(server.url)
            progress.fail_over = progress.last.retryable and self._fleet.can_fail_over(progress.failed_on)
            raise progress.last from exc
        self._fleet.give_back(server, None)
        return completion

    def _remaining(self, progress: _Progress) -> float:
        return self.config.item_budget_s - (time.monotonic() - progress.started)

    def _give_up_message(self, exc: AttemptError, progress: _Progress) -> str:
        last = progress.last or exc
        elapsed = time.monotonic() - progress.started
        if not last.retryable:
            return f"{last.message} (attempt {progress.attempts})"
        budget = f"item_budget_s {self.config.item_budget_s:g}"
        if progress.attempts >= self.config.max_attempts:
            why = "max_attempts used up"
        elif last.retry_after is not None and last.retry_after >= self._remaining(progress):
            why = f"the server's Retry-After is beyond the {budget}"
        else:
            why = f"{budget} used up"
        plural = "s" if progress.attempts != 1 else ""
        return f"gave up after {progress.attempts} attempt{plural} in {elapsed:.1f} s ({why}): last error {last.message}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != KEYLESS else text

    # -- request and response mapping ---------------------------------------------------------------------

    def _to_completion(self, response) -> Completion:
        """Read the SDK's response; anything missing or mistyped raises, and is retried as malformed."""
        if isinstance(response, (str, bytes)):
            raise ValueError(f"expected a JSON chat completion, got text: {_short(str(response), 120)!r}")
        if not response.choices:
            raise ValueError("the response has no choices")
        choices = [_to_choice(c) for c in sorted(response.choices, key=lambda c: c.index or 0)]
        usage = response.usage
        prompt_tokens = int(usage.prompt_tokens) if usage else 0
        completion_tokens = int(usage.completion_tokens) if usage else sum(c.tokens for c in choices)
        if usage and len(choices) == 1:
            choices[0].tokens = completion_tokens
        cost = (prompt_tokens * self.config.usd_per_million_input_tokens
                + completion_tokens * self.config.usd_per_million_output_tokens) / 1e6
        return Completion(choices=choices, prompt_tokens=prompt_tokens, cost_usd=cost)


def _chat_params(config: OpenAIBackendConfig, request: CompletionRequest) -> dict:
    """The chat-completions parameters of one request."""
    params = dict(
        model=config.model,
        messages=[m.model_dump() for m in request.messages],
        max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p, n=request.n,
    )
    if request.seed is not None:
        params["seed"] = request.seed
    if request.stop:
        params["stop"] = list(request.stop)
    if request.top_logprobs > 0 and config.logprobs:
        params.update(logprobs=True, top_logprobs=request.top_logprobs)
    extra = dict(config.extra_body)
    if request.continue_final:
        extra.update(add_generation_prompt=False, continue_final_message=True)
    if extra:
        params["extra_body"] = extra
    return params


def _to_choice(choice) -> Choice:
    text = choice.message.content
    if text is not None and not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not text")
    content = choice.logprobs.content if choice.logprobs is not None else None
    positions = [_position_logprobs(p.top_logprobs) for p in (content or [])]
    return Choice(text=text or "", finish_reason=choice.finish_reason, logprobs=positions, tokens=len(positions))


def _position_logprobs(top) -> dict[str, float]:
    """{token string: logprob}; entries that share a string are summed (logsumexp), as in the vLLM backend."""
    merged: dict[str, float] = {}
    for entry in top or []:
        token, lp = entry.token, float(entry.logprob)
        if not isinstance(token, str) or math.isnan(lp):
            raise ValueError(f"bad top_logprobs entry {entry!r}")
        if token in merged:
            hi, lo = max(merged[token], lp), min(merged[token], lp)
            merged[token] = hi + math.log1p(math.exp(lo - hi)) if hi > -math.inf else hi
        else:
            merged[token] = lp
    return merged


def _read_key(env: str | None) -> str:
    if env is None:
        return KEYLESS
    key = os.environ.get(env, "").strip()
    if not key:
        raise BackendError(
            f"the API key environment variable {env!r} is not set (backend.api_key_env in the judge config): "
            f"export {env}=... before the run, or set api_key_env: null for a server that needs no key"
        )
    return key

