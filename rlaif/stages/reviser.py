"""Constitutional critique and revision, the logic of one round (the loop and outputs: rlaif.stages.revise).

In each round one principle is drawn per item (seeded by the item and the round); the policy critiques
its current response under that principle, then rewrites the response to fix the critique. A critique or
revision that errors, comes back empty, or (unless allowed) is cut off at max_tokens keeps the previous
text and records why: no text is ever made up.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.config.judge import PrincipleSelection
from rlaif.config.revise import ReviseConfig, StepDecoding
from rlaif.judging.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template
from rlaif.records import Message, Record, content_key, non_blank

__all__ = ["ReviseItem", "RoundRecord", "ItemResult", "Reviser", "round_principle"]

_FRAME_ECHO_RE = re.compile(r"[\[(]\s*(BEGIN|END) [A-Z ]{0,40}[\])]?")


class ReviseItem(Record):
    """One prompt and its original response: the starting point of the rounds."""

    id: str
    prompt: str
    original: str
    source: Literal["policy", "samples"]
    model: str = ""
    """The model that wrote the original ('' when a samples file does not say)."""
    tokens: int = 0
    finish_reason: str | None = None
    fingerprint: str = ""
    """What produced the original (policy config and decoding); a policy original is reused only if it matches."""

    _check_texts = field_validator("id", "prompt", "original")(non_blank)

    @property
    def key(self) -> str:
        return content_key(self.id, self.prompt, self.original)


class RoundRecord(Record):
    """One finished critique -> revision round of one item."""

    item_id: str
    item_key: str
    fingerprint: str
    """Identity of the settings that shape a round (policy, decoding, templates, constitution, principles)."""
    round: int
    principle_id: str
    text_before: str
    critique_request: list[Message]
    critique: str = ""
    critique_finish_reason: str | None = None
    revision_request: list[Message] = Field(default_factory=list)
    """Empty when the critique failed and no revision was asked for."""
    revision: str = ""
    """The policy's reply as it came back ('' when there was none)."""
    revision_finish_reason: str | None = None
    accepted: bool
    text_after: str
    """The revision when accepted, else text_before."""
    reason: str | None = None
    """Why the revision was not taken (critique error/empty, revision error/empty/truncated)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0


class ItemResult(Record):
    """Everything about one item: the original, every round, and the final text."""

    id: str
    prompt: str
    original: str
    final: str
    rounds: list[RoundRecord]
    principle_ids: list[str]
    revisions_accepted: int
    changed: bool
    """final differs from the original (after stripping whitespace)."""


def round_principle(constitution: Constitution, selection: PrincipleSelection, item_key: str, round_: int) -> Principle:
    """The principle of one round: drawn with a seed tied to the item and the round, or the fixed/all list in turn."""
    if selection.mode == "sample":
        return constitution.select("sample", 1, [], selection.seed, f"{item_key}:round-{round_}")[0]
    pool = constitution.select(selection.mode, selection.k, selection.ids, selection.seed, item_key)
    return pool[(round_ - 1) % len(pool)]


def _seed(step: StepDecoding, *parts) -> int:
    return (step.seed + int(content_key(*parts)[:8], 16)) % (2**31)


def _text(completion: Completion) -> tuple[str, str | None, str | None]:
    """(text, finish_reason, error) of a single-choice completion."""
    if completion.error:
        return "", None, completion.error
    if not completion.choices:
        return "", None, "no choices returned"
    choice = completion.choices[0]
    return choice.text, choice.finish_reason, None


class Reviser:
    """The critique and revision logic, written once above the backends."""

    def __init__(self, config: ReviseConfig, backend: Backend):
        self.config, self.backend = config, backend
        self.constitution = load_constitution(config.constitution)
        if config.principles.mode == "fixed":
            self.constitution.get(config.principles.ids)
        self.critique_template: JudgeTemplate = load_template(config.critique_template)
        self.revision_template: JudgeTemplate = load_template(config.revision_template)
        self.fingerprint = content_key(
            "rounds", config.policy.model_dump(mode="json"), config.critique.model_dump(), config.revision.model_dump(),
            config.accept_truncated, config.reject_frame_echo, self.critique_template.version, self.revision_template.version,
            self.constitution.name, self.constitution.version, config.principles.model_dump(mode="json"),
        )
        self.original_fingerprint = content_key("policy", config.policy.model_dump(mode="json"),
                                                config.response.model_dump(), config.system_prompt)

    # --- original responses -------------------------------------------------------------------
    def original_requests(self, prompts: list) -> list[CompletionRequest]:
        step, system = self.config.response, self.config.system_prompt
        head = [Message(role="system", content=system)] if system else []
        return [CompletionRequest(messages=[*head, Message(role="user", content=p.prompt)], max_tokens=step.max_tokens,
                                  temperature=step.temperature, top_p=step.top_p, seed=_seed(step, p.id, p.prompt))
                for p in prompts]

    def originals(self, prompts: list) -> tuple[list[ReviseItem], list[dict]]:
        """Original responses for prompts; a prompt with no usable response is a failure with its reason."""
        items, failures = [], []
        for prompt, completion in zip(prompts, self.backend.complete(self.original_requests(prompts))):
            text, finish, error = _text(completion)
            if error or not text.strip():
                failures.append({"item_id": prompt.id, "reason": f"original response {'error: ' + error if error else 'empty'}"})
                continue
            items.append(ReviseItem(id=prompt.id, prompt=prompt.prompt, original=text.strip(), source="policy",
                                    model=self.backend.model, tokens=completion.completion_tokens,
                                    finish_reason=finish, fingerprint=self.original_fingerprint))
        return items, failures

    # --- one round ----------------------------------------------------------------------------
    def _request(self, template: JudgeTemplate, step: StepDecoding, key: str, round_: int, **variables) -> CompletionRequest:
        return CompletionRequest(messages=template.render(**variables), max_tokens=step.max_tokens,
                                 temperature=step.temperature, top_p=step.top_p, seed=_seed(step, key, round_))

    def run_round(self, chunk: list[tuple[ReviseItem, str]], round_: int) -> list[RoundRecord]:
        """Critique every (item, current text) of the chunk in one batch, then revise in one batch."""
        principles = [round_principle(self.constitution, self.config.principles, item.key, round_) for item, _ in chunk]
        critique_requests = [
            self._request(self.critique_template, self.config.critique, item.key, round_,
                          principle=p.model_dump(), prompt=item.prompt, response=text)
            for (item, text), p in zip(chunk, principles)
        ]
        critiques = self.backend.complete(critique_requests)
        revision_requests: dict[int, CompletionRequest] = {}
        for i, ((item, text), p, c) in enumerate(zip(chunk, principles, critiques)):
            critique, _, error = _text(c)
            if not error and critique.strip():
                revision_requests[i] = self._request(
                    self.revision_template, self.config.revision, item.key, round_,
                    principle=p.model_dump(), prompt=item.prompt, response=text, critique=critique.strip())
        replies = self.backend.complete(list(revision_requests.values())) if revision_requests else []
        revisions = dict(zip(revision_requests, replies))
        return [self._record(item, text, round_, p, critique_requests[i], critiques[i], revision_requests.get(i), revisions.get(i))
                for i, ((item, text), p) in enumerate(zip(chunk, principles))]

    def _record(self, item, text, round_, principle, critique_request, critique, revision_request, revision) -> RoundRecord:
        critique_text, critique_finish, critique_error = _text(critique)
        revision_text, revision_finish, revision_error = _text(revision) if revision else ("", None, None)
        reason = self._refusal(critique_text, critique_error, revision_text, revision_finish, revision_error)
        done = [c for c in (critique, revision) if c is not None]
        return RoundRecord(
            item_id=item.id, item_key=item.key, fingerprint=self.fingerprint, round=round_, principle_id=principle.id,
            text_before=text, critique_request=critique_request.messages, critique=critique_text,
            critique_finish_reason=critique_finish, revision_request=revision_request.messages if revision_request else [],
            revision=revision_text, revision_finish_reason=revision_finish, accepted=reason is None,
            text_after=revision_text.strip() if reason is None else text, reason=reason,
            prompt_tokens=sum(c.prompt_tokens for c in done), completion_tokens=sum(c.completion_tokens for c in done),
            latency_s=sum(c.latency_s for c in done), cost_usd=sum(c.cost_usd for c in done),
        )

    def _refusal(self, critique, critique_error, revision, revision_finish, revision_error) -> str | None:
        """Why a round's revision cannot be taken, or None when it can."""
        if critique_error:
            return f"critique error: {critique_error}"
        if not critique.strip():
            return "critique empty"
        if revision_error:
            return f"revision error: {revision_error}"
        if not revision.strip():
            return "revision empty"
        echo = _FRAME_ECHO_RE.search(revision) if self.config.reject_frame_echo else None
        if echo:
            return f"revision echoes the prompt frame: {echo.group(0)}"
        if revision_finish == "length" and not self.config.accept_truncated:
            return f"revision truncated: cut off at max_tokens {self.config.revision.max_tokens}"
        return None
