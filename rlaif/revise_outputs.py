"""Outputs of `rlaif revise`: the SFT and preference datasets (TRL conversational formats, with
provenance columns), every critique, the per-item records, what was skipped and why, and the manifest.

SFT rows are the items with at least one accepted revision (prompt -> final revision); preference rows
are the items whose final revision differs from the original (chosen = final, rejected = original).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from rlaif.revise import ORIGINALS, ROUNDS, ItemResult, ReviseConfig, Reviser
from rlaif.runfolder import RunFolder

__all__ = ["sft_row", "preference_row", "write_outputs", "PROVENANCE_COLUMNS", "SFT_COLUMNS", "PREFERENCE_COLUMNS"]

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


def sft_row(result: ItemResult, reviser: Reviser) -> dict:
    """TRL conversational prompt-completion row: the final revision is the completion to learn."""
    return {"prompt": [{"role": "user", "content": result.prompt}],
            "completion": [{"role": "assistant", "content": result.final}], **_provenance(result, reviser)}


def preference_row(result: ItemResult, reviser: Reviser) -> dict:
    """TRL conversational preference row: the final revision is chosen over the original."""
    return {"prompt": [{"role": "user", "content": result.prompt}],
            "chosen": [{"role": "assistant", "content": result.final}],
            "rejected": [{"role": "assistant", "content": result.original}], **_provenance(result, reviser)}


def _save_dataset(run: RunFolder, name: str, rows: list[dict], text_columns: tuple[str, ...]) -> None:
    from datasets import Dataset, Features, List, Value

    message = List({"role": Value("string"), "content": Value("string")})
    features = Features({
        **{c: message for c in text_columns}, "item_id": Value("string"), "policy_model": Value("string"),
        "policy_backend": Value("string"), "critique_template_version": Value("string"),
        "revision_template_version": Value("string"), "constitution_version": Value("string"),
        "principle_ids": List(Value("string")), "rounds": Value("int64"), "revisions_accepted": Value("int64"),
    })
    data = Dataset.from_list(rows, features=features) if rows else Dataset.from_dict({c: [] for c in features}, features=features)
    data.save_to_disk(str(run.file(name)), num_shards=1)  # one shard, so an empty dataset still loads
    run.write_jsonl(f"{name}.jsonl", rows)


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
    from rlaif.pipeline import _versions

    sft = [sft_row(r, reviser) for r in results if r.revisions_accepted]
    prefs = [preference_row(r, reviser) for r in results if r.revisions_accepted and r.changed]
    skipped = _skipped(results, failures)
    run.write_jsonl("items.jsonl", results)
    run.write_jsonl("critiques.jsonl", _critique_rows(results))
    _save_dataset(run, "sft", sft, ("prompt", "completion"))
    _save_dataset(run, "preferences", prefs, ("prompt", "chosen", "rejected"))
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
    run.write_json("manifest.json", {
        "created_at": datetime.now(timezone.utc).isoformat(), "config": config.model_dump(mode="json"),
        "policy": {"model": reviser.backend.model, "backend": reviser.backend.name},
        "templates": {"critique": {"name": reviser.critique_template.name, "version": reviser.critique_template.version},
                      "revision": {"name": reviser.revision_template.name, "version": reviser.revision_template.version}},
        "constitution": {"name": reviser.constitution.name, "version": reviser.constitution.version},
        "fingerprint": reviser.fingerprint, "versions": _versions(), "counts": summary,
        "files": {"sft": "sft/", "preferences": "preferences/", "items": "items.jsonl", "critiques": "critiques.jsonl",
                  "rounds": ROUNDS, "originals": ORIGINALS, "skipped": "skipped.jsonl", "invalid_rows": "invalid_rows.jsonl"},
    })
    return summary
