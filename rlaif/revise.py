"""Constitutional critique and revision (the supervised stage of Constitutional AI), resumable.

    prompts -> original responses -> (critique -> revision) x rounds -> SFT and preference datasets

In each round one principle is drawn per item (seeded by the item and the round); the policy critiques
its current response under that principle, then rewrites the response to fix the critique. A critique or
revision that errors, comes back empty, or (unless allowed) is cut off at max_tokens keeps the previous
text and records why: no text is ever made up. Every finished round of every item is appended to
`rounds.jsonl`, so a rerun continues from the last finished round and writes nothing twice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm.auto import tqdm

from rlaif.backends.base import Backend, Completion, CompletionRequest
from rlaif.config import BackendConfig, PrincipleSelection, VLLMBackendConfig, _Config
from rlaif.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template
from rlaif.records import Message, PromptItem, _non_blank, _Record, content_key
from rlaif.resources import resolve_resource
from rlaif.runfolder import RunFolder, read_rows

__all__ = [
    "StepDecoding", "ReviseConfig", "ReviseItem", "RoundRecord", "ItemResult", "Reviser",
    "SampleInput", "load_revise_config", "round_principle", "run_revise", "ORIGINALS", "ROUNDS",
]

ORIGINALS, ROUNDS = "originals.jsonl", "rounds.jsonl"
_FRAME_ECHO_RE = re.compile(r"[\[(]\s*(BEGIN|END) [A-Z ]{0,40}[\])]?")


class StepDecoding(_Config):
    """Decoding of one step: the original response, the critique or the revision."""

    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0
    """Base seed; each request's seed is derived from it, the item and the round, so a rerun reproduces it."""


class ReviseConfig(_Config):
    """`rlaif revise`: prompts -> original responses -> critique/revision rounds -> SFT and preference data."""

    prompts: str = "sets/instructions-v1.jsonl"
    """JSONL of {id, prompt[, category]} under prompts/ (or a path); ignored when a samples file is given."""
    limit: int | None = Field(None, ge=1)
    """Use only the first N prompts (or samples)."""
    policy: BackendConfig = Field(default_factory=VLLMBackendConfig)
    """The model that answers, critiques and revises (the embedded model on vLLM by default)."""
    system_prompt: str | None = None
    """Optional system message for the original responses."""
    rounds: int = Field(2, ge=1, le=16)
    """Critique -> revision rounds; round r critiques round r-1's revision."""
    principles: PrincipleSelection = Field(default_factory=PrincipleSelection)
    """sample: one principle drawn per item and round with `seed`; fixed: `ids` in turn, one per round;
    all: every principle of the constitution in turn, one per round."""
    constitution: str = "constitution/default.yaml"
    critique_template: str = "revise/critique.jinja"
    revision_template: str = "revise/revision.jinja"
    response: StepDecoding = StepDecoding(max_tokens=128, temperature=0.7)
    """Decoding of the original responses (not used with a samples file)."""
    critique: StepDecoding = StepDecoding(max_tokens=128, temperature=0.7, seed=1)
    revision: StepDecoding = StepDecoding(max_tokens=160, temperature=0.7, seed=2)
    accept_truncated: bool = False
    """Take a revision cut off at max_tokens; by default it is refused (with the reason) and the previous
    text is kept, so the SFT data never teaches cut-off answers."""
    reject_frame_echo: bool = True
    """Refuse a revision that contains the templates' [BEGIN ...]/[END ...] frame markers: the model restated
    the request instead of answering it (small models do this often)."""
    batch_size: int = Field(16, ge=1)
    """Items per batch; each finished batch of a round is saved, so a killed run loses at most one."""

    @model_validator(mode="after")
    def _one_principle_per_round(self) -> "ReviseConfig":
        if self.principles.mode == "sample" and self.principles.k != 1:
            raise ValueError("principles.k must be 1: each round critiques under exactly one principle")
        return self


def load_revise_config(name: str | Path) -> ReviseConfig:
    """Load a revise config by name (`revise`) or path."""
    from rlaif.config import load_yaml_model
    from rlaif.resources import resolve_resource

    return load_yaml_model(resolve_resource(name, "configs"), ReviseConfig)


class ReviseItem(_Record):
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

    _check_texts = field_validator("id", "prompt", "original")(_non_blank)

    @property
    def key(self) -> str:
        return content_key(self.id, self.prompt, self.original)


class RoundRecord(_Record):
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


class ItemResult(_Record):
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
        if self.config.reject_frame_echo and _FRAME_ECHO_RE.search(revision):
            return f"revision echoes the prompt frame: {_FRAME_ECHO_RE.search(revision).group(0)}"
        if revision_finish == "length" and not self.config.accept_truncated:
            return f"revision truncated: cut off at max_tokens {self.config.revision.max_tokens}"
        return None


def revise_items(
    items: list[ReviseItem], reviser: Reviser, done: dict[tuple[str, int], RoundRecord], rounds: int,
    batch_size: int, save: Callable[[list[RoundRecord]], None], progress: bool = True,
) -> int:
    """Run the missing rounds of every item, round by round; `done` is updated in place. Returns rounds run."""
    ran = 0
    for round_ in range(1, rounds + 1):
        todo = [item for item in items if (item.key, round_) not in done]
        bar = tqdm(total=len(todo), desc=f"round {round_}/{rounds}: critique + revision", unit="item", disable=not progress)
        for start in range(0, len(todo), batch_size):
            chunk = [(item, current_text(item, done, round_ - 1)) for item in todo[start : start + batch_size]]
            records = reviser.run_round(chunk, round_)
            save(records)
            done.update(((r.item_key, r.round), r) for r in records)
            ran += len(records)
            bar.update(len(chunk))
        bar.close()
    return ran


def current_text(item: ReviseItem, done: dict[tuple[str, int], RoundRecord], round_: int) -> str:
    """The text after `round_` (0 = the original)."""
    return item.original if round_ == 0 else done[(item.key, round_)].text_after


def item_result(item: ReviseItem, done: dict[tuple[str, int], RoundRecord], rounds: int) -> ItemResult:
    records = [done[(item.key, r)] for r in range(1, rounds + 1)]
    final = records[-1].text_after
    return ItemResult(
        id=item.id, prompt=item.prompt, original=item.original, final=final, rounds=records,
        principle_ids=[r.principle_id for r in records], revisions_accepted=sum(r.accepted for r in records),
        changed=final.strip() != item.original.strip(),
    )


class SampleInput(BaseModel):
    """A row of a samples file: {id or prompt_id[, index], prompt, response[, model]}; other keys are ignored,
    so `samples.jsonl` of `rlaif generate` can be given as it is (its ids become prompt_id:index)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str
    prompt: str
    response: str
    model: str = ""
    finish_reason: str | None = None
    tokens: int = 0

    _check_texts = field_validator("id", "prompt", "response")(_non_blank)

    @model_validator(mode="before")
    @classmethod
    def _id_from_prompt_id(cls, data):
        if isinstance(data, dict) and "id" not in data and "prompt_id" in data:
            index = data.get("index")
            data = {**data, "id": str(data["prompt_id"]) + (f":{index}" if index is not None else "")}
        return data

    def item(self) -> ReviseItem:
        return ReviseItem(id=self.id, prompt=self.prompt, original=self.response.strip(), source="samples",
                          model=self.model, tokens=self.tokens, finish_reason=self.finish_reason)


def load_originals(config: ReviseConfig, reviser: Reviser, run: RunFolder, samples: Path | None, progress: bool = True):
    """(items, failures, invalid rows): originals from a samples file, or from the policy (resumed)."""
    if samples is not None:
        rows, invalid = read_rows(Path(samples), SampleInput)
        return [r.item() for r in rows[: config.limit or None]], [], invalid
    prompts, invalid = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    prompts = prompts[: config.limit or None]
    have = {(i.id, i.prompt): i for i in run.read(ORIGINALS, ReviseItem) if i.fingerprint == reviser.original_fingerprint}
    todo = [p for p in prompts if (p.id, p.prompt) not in have]
    failures = []
    bar = tqdm(total=len(todo), desc="original responses", unit="item", disable=not progress)
    for start in range(0, len(todo), config.batch_size):
        new, failed = reviser.originals(todo[start : start + config.batch_size])
        run.append(ORIGINALS, new)
        have.update(((i.id, i.prompt), i) for i in new)
        failures.extend(failed)
        bar.update(len(todo[start : start + config.batch_size]))
    bar.close()
    return [have[(p.id, p.prompt)] for p in prompts if (p.id, p.prompt) in have], failures, invalid


def run_revise(config: ReviseConfig, out: str | Path, samples: str | Path | None = None,
               backend: Backend | None = None, progress: bool = True) -> dict:
    """The whole job in one run folder; reruns resume. Opens the policy backend unless one is given."""
    if backend is None:
        from rlaif.pipeline import BackendPool

        with BackendPool() as pool:
            return run_revise(config, out, samples, pool.get(config.policy), progress)
    started = time.perf_counter()
    run, reviser = RunFolder(out), Reviser(config, backend)
    items, failures, invalid = load_originals(config, reviser, run, Path(samples) if samples else None, progress)
    done = {(r.item_key, r.round): r for r in run.read(ROUNDS, RoundRecord) if r.fingerprint == reviser.fingerprint}
    ran = revise_items(items, reviser, done, config.rounds, config.batch_size, lambda rs: run.append(ROUNDS, rs), progress)
    results = [item_result(item, done, config.rounds) for item in items]
    from rlaif.revise_outputs import write_outputs

    counts = {"inputs": str(samples) if samples else config.prompts, "rounds_run_now": ran, "rounds_reused": len(items) * config.rounds - ran,
              "total_seconds": round(time.perf_counter() - started, 1)}
    return write_outputs(run, config, reviser, results, failures, invalid, counts)

