"""`RemoteJudgeReward`: a TRL reward function (GRPO, RLOO) whose judge runs in `rlaif serve`.

The same semantics as rlaif.train.judge_reward.JudgeReward, over HTTP: each completion is compared with a
reference response by the service's pairwise judge (POST /v1/reward with `references`), and its reward is the
judge's probability that the completion is better, 0.5 for a tie. A completion that cannot be judged (empty
completion or prompt, no reference, no verdict from the judge) gets None, never an invented number: TRL turns
None into NaN and leaves it out of the group's baseline. The training machine needs only httpx.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from rlaif.client.api import Client, ServiceError

__all__ = ["RemoteJudgeReward", "text_of"]

_OUR_REASONS = ("empty completion", "no reference response", "empty prompt")


def text_of(value: Any, role: str | None = None) -> str:
    """The text of a plain string, of one message, or of the last message (of `role`, if any has it) of a
    conversation; a message's content may be a string or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        content = value.get("content", "")
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") if isinstance(p, Mapping) else str(p) for p in content or [])
    messages = list(value)
    chosen = [m for m in messages if role is None or (isinstance(m, Mapping) and m.get("role") == role)] or messages
    return text_of(chosen[-1]) if chosen else ""


def _category(reason: str) -> str:
    return reason if reason in _OUR_REASONS else "judge could not read a verdict"


class RewardFunction:
    """What every judge reward shares (this one over HTTP, rlaif.train.judge_reward's in-process): TRL's reward
    signature, the reference of each completion (its row's `reference_column` value, which TRL passes as a kwarg,
    else the fixed `reference`), the local reasons a completion cannot be judged, and the counts of unlabeled ones."""

    def __init__(self, reference: str | None, reference_column: str, name: str):
        self.reference = reference
        self.reference_column = reference_column
        self.__name__ = name  # TRL names each reward function's logged metrics after it
        self.calls = 0
        self.unlabeled: Counter[str] = Counter()
        self.last_reasons: list[str | None] = []

    def _references(self, n: int, kwargs: dict) -> list[Any]:
        column = kwargs.get(self.reference_column)
        if column is not None:
            return list(column)
        return [self.reference] * n

    def _plan(self, prompts: list, completions: list, kwargs: dict) -> list[tuple[str, str, str] | str]:
        """For each completion: the (prompt, completion, reference) texts to judge, or why they cannot be judged."""
        self.calls += 1
        references = self._references(len(completions), kwargs)
        if not len(prompts) == len(completions) == len(references):
            raise ValueError(f"one prompt and one reference per completion: got {len(prompts)} prompts, "
                             f"{len(completions)} completions, {len(references)} references")
        return [_texts(p, c, r) for p, c, r in zip(prompts, completions, references)]

    def _finish(self, rewards: list[float | None], reasons: list[str | None], kwargs: dict) -> list[float | None]:
        self.last_reasons = reasons
        self.unlabeled.update(_category(r) for r in reasons if r)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            log_metric(f"{self.__name__}/unlabeled_frac", sum(r is None for r in rewards) / len(rewards))
        return rewards


def _texts(prompt: Any, completion: Any, reference: Any) -> tuple[str, str, str] | str:
    text = text_of(completion, role="assistant")
    ref = None if reference is None else text_of(reference, role="assistant")
    question = text_of(prompt, role="user")
    if not text.strip():
        return "empty completion"
    if ref is None or not ref.strip():
        return "no reference response"
    if not question.strip():
        return "empty prompt"
    return question, text, ref


class RemoteJudgeReward(RewardFunction):
    """Callable with TRL's reward signature: `(prompts, completions, **kwargs) -> list[float | None]`.

    `service` is the service's URL (a `Client` is built with `api_key` or the RLAIF_API_KEY variable, and
    `client_options` such as timeout= or max_retries=) or a `Client`. The reference of each completion is its
    row's `reference_column` value (TRL passes dataset columns as kwargs), else the fixed `reference`. `judge`
    names one of the service's pairwise judges (default: its first). A request that fails after the client's
    retries raises ServiceError: training stops rather than learn from made-up rewards.
    """

    def __init__(self, service: str | Client, *, api_key: str | None = None, judge: str | None = None,
                 reference: str | None = None, reference_column: str = "reference", name: str = "remote_judge_reward",
                 **client_options: Any):
        self._client = service if isinstance(service, Client) else None
        self._own = self._client is None
        self.url = (service if isinstance(service, str) else service.base_url).rstrip("/")
        self._client_args = {"api_key": api_key, **client_options}
        super().__init__(reference, reference_column, name)
        self.judge = judge
        self.last_judge: str | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, **self._client_args)
        return self._client

    def close(self) -> None:
        if self._own and self._client is not None:
            self._client.close()
            self._client = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (for spawned workers): an own client is rebuilt on first use."""
        state = dict(self.__dict__)
        if self._own:
            state["_client"] = None
        return state

    def __repr__(self) -> str:
        return f"RemoteJudgeReward({self.url!r}, judge={self.judge!r})"

    def check(self) -> dict[str, Any]:
        """Fail fast, before training starts: the service answers, the key is accepted, and it has the pairwise
        judge asked for (or any pairwise judge). Returns that judge's description."""
        judges = self.client.judges()
        pairwise = [j for j in judges if j.get("mode") == "pairwise"]
        chosen = [j for j in pairwise if self.judge is None or j.get("id") == self.judge]
        if not chosen:
            have = ", ".join(f"{j.get('id')} ({j.get('mode')})" for j in judges) or "none"
            wanted = f"pairwise judge named {self.judge!r}" if self.judge else "pairwise judge"
            raise ServiceError(None, f"{self.url} has no {wanted}; its judges: {have}", code="judge_not_found")
        return chosen[0]

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        planned = self._plan(prompts, completions, kwargs)
        todo = [p for p in planned if isinstance(p, tuple)]
        rewards: list[float | None] = []
        reasons: list[str | None] = []
        if todo:
            reply = self.client.reward([t[0] for t in todo], [t[1] for t in todo], [t[2] for t in todo], judge=self.judge)
            if len(reply["rewards"]) != len(todo):
                raise ServiceError(None, f"{self.url} sent {len(reply['rewards'])} rewards for {len(todo)} completions")
            self.last_judge = reply["judge"]
            judged = iter(zip(reply["rewards"], reply["reasons"]))
        for item in planned:
            if isinstance(item, str):
                rewards.append(None)
                reasons.append(item)
                continue
            value, reason = next(judged)
            rewards.append(None if value is None else float(value))
            reasons.append(None if value is not None else (reason or "unlabeled"))
        return self._finish(rewards, reasons, kwargs)
