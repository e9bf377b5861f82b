"""What an audit measured: fingerprints of the judge and of the gold set, written into every metrics.json.

Two audits measured the same thing when both fingerprints match. `rlaif audit --baseline` and `rlaif audit
compare` read them to say whether the judge, the gold set, or both changed between two audits.

- judge: its config (the YAML's content, hashed after validation, so comments and key order do not count),
  its template and constitution with their versions, and each model's identity (`rlaif.models.model_identity`:
  the embedded model's source checksum, a local folder's config and weight sizes, or a served model's name).
- gold: a hash of the items as loaded (ids, texts, labels, annotators, categories), their number and path. An
  item's id comes from its row and the mapping, never from the file's name (rlaif.audit.gold), so the same items
  in a renamed or moved file give the same hash; `ids` marks fingerprints written under that rule.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.audit.gold import GoldItem
from rlaif.config.judge import JudgeConfig
from rlaif.judging.identity import JudgeIdentity
from rlaif.models import model_identity
from rlaif.records import content_key

__all__ = ["judge_fingerprint", "gold_fingerprint", "labels_fingerprint", "what_changed", "file_named_ids", "GOLD_IDS"]


def _model(config: JudgeConfig) -> dict:
    """The identity of a single judge's model, by its backend's kind."""
    backend = config.backend
    if backend.kind == "vllm":
        return {"backend": "vllm", **model_identity(backend.model)}
    if backend.kind == "openai":
        return {"backend": "openai", "model": backend.model, "checksum": None, "servers": backend.urls,
                "from": "served model: identified by name and servers"}
    return {"backend": backend.kind, "model": backend.model, "checksum": None, "from": "fake backend"}


def judge_fingerprint(identity: JudgeIdentity) -> dict:
    """The judge's identity: `sha` changes whenever the judge would label differently (config, template or
    constitution version, or any model's identity). Needs no backend: `judge.identity` or `judge_identity(spec)`."""
    models = [_model(config) for config in identity.single_configs]
    return {
        "name": identity.name, "kind": identity.kind, "config_sha": content_key(identity.config_data),
        "template": identity.template, "template_version": identity.template_version,
        "constitution": identity.constitution, "constitution_version": identity.constitution_version, "models": models,
        "sha": content_key(identity.fingerprint, models),
    }


def labels_fingerprint(run_dir: str, judgments: list) -> dict:
    """For `rlaif audit --labels`: the judge named in the run's judgments (they carry their provenance)."""
    seen = {(j.judge, j.model, j.template, j.template_version, j.constitution_version) for j in judgments}
    names = sorted({s[0] for s in seen})
    return {"name": "+".join(names) or f"labels from {run_dir}", "kind": "labels", "labels_run": str(run_dir),
            "provenance": [dict(zip(("judge", "model", "template", "template_version", "constitution_version"), s))
                           for s in sorted(seen)],
            "sha": content_key(sorted(seen))}


GOLD_IDS = "from the row and the mapping, never the file name"
"""The `ids` of a gold fingerprint: audits written before it was there may hold ids that began with the gold file's
name (a mapped file's "<stem>-<line>"), which cannot pair with later audits."""


def gold_fingerprint(items: list[GoldItem], path: str) -> dict:
    """The gold set's identity: the same items (ids, texts, labels) give the same `sha`, whatever the file."""
    return {"path": str(path), "n_items": len(items), "ids": GOLD_IDS,
            "sha": content_key([item.model_dump(mode="json") for item in items])}


def file_named_ids(metrics: dict, rows: list[dict]) -> str | None:
    """The gold file's stem when an audit's gold ids all begin with it and its fingerprint predates `ids`: an audit
    of a mapped gold file written when ids carried the file's name. None otherwise."""
    gold = (metrics.get("fingerprint") or {}).get("gold") or {}
    stem = Path(str(gold.get("path") or metrics.get("gold") or "")).stem
    if "ids" in gold or not stem or not rows or not all(str(r.get("id", "")).startswith(f"{stem}-") for r in rows):
        return None
    return stem


def what_changed(old: dict, new: dict) -> list[str]:
    """Which of judge and gold differ between two metrics.json fingerprints ("judge", "gold"); [] if neither.
    A missing fingerprint (an audit written before fingerprints existed) counts as changed."""
    changed = []
    for part in ("judge", "gold"):
        a, b = (old.get("fingerprint") or {}).get(part), (new.get("fingerprint") or {}).get(part)
        if not a or not b or a.get("sha") != b.get("sha"):
            changed.append(part)
    return changed
