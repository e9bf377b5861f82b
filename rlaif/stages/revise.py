"""`rlaif revise`: constitutional critique and revision (the supervised stage of Constitutional AI), resumable.

    prompts -> original responses -> (critique -> revision) x rounds -> SFT and preference datasets

Every finished round of every item is appended to `rounds.jsonl`, so a rerun continues from the last
finished round and writes nothing twice. Outputs: the SFT and preference datasets (TRL conversational
formats, with provenance columns), every critique, the per-item records, what was skipped and why, and
the manifest. SFT rows are the items with at least one accepted revision (prompt -> final revision);
preference rows are the items whose final revision differs from the original (chosen = final,
rejected = original).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from tqdm.auto import tqdm

from rlaif.backends.base import Backend
from rlaif.backends.pool import BackendPool
from rlaif.config.revise import ReviseConfig
from rlaif.records import PromptItem, non_blank
from rlaif.resources import resolve_resource
from rlaif.stages.reviser import ItemResult, ReviseItem, Reviser, RoundRecord
from rlaif.store.datasets import revision_features, save_dataset, to_dataset
from rlaif.store.manifest import write_manifest
from rlaif.store.rows import conversation
from rlaif.store.runfolder import RowError, RunFolder, read_rows, require_usable

__all__ = [
    "SampleInput", "run_revise", "revise_items", "sft_row", "preference_row", "write_outputs", "ORIGINALS", "ROUNDS",
    "PROVENANCE_COLUMNS", "SFT_COLUMNS", "PREFERENCE_COLUMNS",
]

ORIGINALS, ROUNDS = "originals.jsonl", "rounds.jsonl"

PROVENANCE_COLUMNS = [
    "item_id", "policy_model", "policy_backend", "critique_template_version", "revision_template_version",
    "constitution_version", "principle_ids", "rounds", "revisions_accepted",
]
SFT_COLUMNS = ["prompt", "completion", *PROVENANCE_COLUMNS]
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected", *PROVENANCE_COLUMNS]


def _provenance(result: ItemResult, reviser: Reviser) -> dict:
    return {
        "item_id": result.id, "policy_model": reviser.backend.model, "policy_backend": reviser.backend.name,
        "critique_template_version": reviser.critique_template.version,
        "revision_template_version": reviser.revision_template.version,
        "constitution_version": reviser.constitution.version, "principle_ids": result.principle_ids,
        "rounds": len(result.rounds), "revisions_accepted": result.revisions_accepted,
    }


def revise_items(
    items: list[ReviseItem], reviser: Reviser, done: dict[tuple[str, int], RoundRecord], rounds: int,
    batch_size: int, save: Callable[[list[RoundRecord]], object], progress: bool = True,
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

    _check_texts = field_validator("id", "prompt", "response")(non_blank)

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


def read_samples(path: Path, limit: int | None) -> tuple[list[ReviseItem], list[RowError]]:
    """Originals from a samples file, and its invalid rows; a file with no usable row is an error."""
    rows, invalid = read_rows(path, SampleInput)
    require_usable(path, rows, invalid, "--samples reads {id or prompt_id, prompt, response} rows, "
                                        "e.g. the samples.jsonl of `rlaif generate`")
    return [r.item() for r in rows[: limit or None]], invalid


def generate_originals(config: ReviseConfig, reviser: Reviser, run: RunFolder, progress: bool = True):
    """(items, failures, invalid rows): originals from the policy for the config's prompts (resumed)."""
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
    """The whole job in one run folder; reruns resume. Opens the policy backend unless one is given, after
    reading the samples file (so a file with no usable row is refused before an engine starts)."""
    given = read_samples(Path(samples), config.limit) if samples is not None else None
    inputs = str(samples) if samples is not None else config.prompts
    if backend is not None:
        return _revise(config, RunFolder(out), backend, given, inputs, progress)
    with BackendPool() as pool:
        return _revise(config, RunFolder(out), pool.get(config.policy), given, inputs, progress)


def _revise(config: ReviseConfig, run: RunFolder, backend: Backend,
            given: tuple[list[ReviseItem], list[RowError]] | None, inputs: str, progress: bool) -> dict:
    started = time.perf_counter()
    reviser = Reviser(config, backend)
    if given is not None:
        items, failures, invalid = given[0], [], given[1]
    else:
        items, failures, invalid = generate_originals(config, reviser, run, progress)
    done = {(r.item_key, r.round): r for r in run.read(ROUNDS, RoundRecord) if r.fingerprint == reviser.fingerprint}
    ran = revise_items(items, reviser, done, config.rounds, config.batch_size, lambda rs: run.append(ROUNDS, rs), progress)
    results = [item_result(item, done, config.rounds) for item in items]
    counts = {"inputs": inputs, "rounds_run_now": ran, "rounds_reused": len(items) * config.rounds - ran,
              "total_seconds": round(time.perf_counter() - started, 1)}
    return write_outputs(run, config, reviser, results, failures, invalid, counts)


def sft_row(result: ItemResult, reviser: Reviser) -> dict:
    """TRL conversational prompt-completion row: the final revision is the completion to learn."""
    return {**conversation(result.prompt, completion=result.final), **_provenance(result, reviser)}


def preference_row(result: ItemResult, reviser: Reviser) -> dict:
    """TRL conversational preference row: the final revision is chosen over the original."""
    return {**conversation(result.prompt, chosen=result.final, rejected=result.original), **_provenance(result, reviser)}


def _save(run: RunFolder, name: str, rows: list[dict], text_columns: tuple[str, ...]) -> None:
    save_dataset(run, name, to_dataset(rows, revision_features(text_columns)), rows)


def _critique_rows(results: list[ItemResult]) -> list[dict]:
    return [{"item_id": r.item_id, "round": r.round, "principle_id": r.principle_id, "critique": r.critique,
             "finish_reason": r.critique_finish_reason, "reason": r.reason if r.reason and r.reason.startswith("critique") else None,
             "response": r.text_before, "critique_request": [m.model_dump() for m in r.critique_request]}
            for result in results for r in result.rounds]


def _skipped(results: list[ItemResult], failures: list[dict]) -> list[dict]:
    skipped = [{**f, "excluded_from": ["sft", "preferences"]} for f in failures]
    for result in results:
        if not result.revisions_accepted:
            reasons = "; ".join(f"round {r.round}: {r.reason}" for r in result.rounds)
            skipped.append({"item_id": result.id, "excluded_from": ["sft", "preferences"], "reason": f"no revision accepted ({reasons})"})
        elif not result.changed:
            skipped.append({"item_id": result.id, "excluded_from": ["preferences"], "reason": "final revision equals the original"})
    return skipped


def write_outputs(run: RunFolder, config: ReviseConfig, reviser: Reviser, results: list[ItemResult], failures: list[dict],
                  invalid: list, counts: dict) -> dict:
    """items.jsonl, critiques.jsonl, sft/, preferences/, skipped.jsonl, invalid_rows.jsonl, manifest.json;
    returns the summary (with `counts` merged in)."""
    sft = [sft_row(r, reviser) for r in results if r.revisions_accepted]
    prefs = [preference_row(r, reviser) for r in results if r.revisions_accepted and r.changed]
    skipped = _skipped(results, failures)
    run.write_jsonl("items.jsonl", results)
    run.write_jsonl("critiques.jsonl", _critique_rows(results))
    _save(run, "sft", sft, ("prompt", "completion"))
    _save(run, "preferences", prefs, ("prompt", "chosen", "rejected"))
    run.write_jsonl("skipped.jsonl", skipped)
    run.write_jsonl("invalid_rows.jsonl", invalid)
    rounds = [r for result in results for r in result.rounds]
    reasons = [r.reason for r in rounds if r.reason] + [f["reason"] for f in failures]
    summary = {
        "items": len(results), "rounds": config.rounds, "revisions": len(rounds),
        "revisions_accepted": sum(r.accepted for r in rounds),
        "revisions_changed_text": sum(r.accepted and r.text_after.strip() != r.text_before.strip() for r in rounds),
        "items_changed": sum(r.changed for r in results), "sft_rows": len(sft), "preference_rows": len(prefs),
        "skipped": len(skipped), "original_failures": len(failures), "invalid_rows": len(invalid),
        "failures": dict(Counter(reason.split(":")[0] for reason in reasons)),
        "failure_examples": {reason.split(":")[0]: reason[:300] for reason in reversed(reasons)},
        "prompt_tokens": sum(r.prompt_tokens for r in rounds), "completion_tokens": sum(r.completion_tokens for r in rounds),
        **counts, "run_dir": str(run.path),
    }
    write_manifest(run, {
        "config": config.model_dump(mode="json"),
        "policy": {"model": reviser.backend.model, "backend": reviser.backend.name},
        "templates": {"critique": {"name": reviser.critique_template.name, "version": reviser.critique_template.version},
                      "revision": {"name": reviser.revision_template.name, "version": reviser.revision_template.version}},
        "constitution": {"name": reviser.constitution.name, "version": reviser.constitution.version},
        "fingerprint": reviser.fingerprint,
    }, summary, {"sft": "sft/", "preferences": "preferences/", "items": "items.jsonl", "critiques": "critiques.jsonl",
                 "rounds": ROUNDS, "originals": ORIGINALS, "skipped": "skipped.jsonl", "invalid_rows": "invalid_rows.jsonl"})
    return summary
