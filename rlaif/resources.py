"""Where the judge catalogue, prompts and run configs live.

In a source checkout they are the top-level folders `judges/`, `prompts/` and `configs/`. In an installed
wheel they are shipped as package data under `rlaif/_data/`. `RLAIF_HOME` overrides both.
A name given as an existing path is used as it is; a bare name is looked up in the catalogue.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from rlaif.errors import ConfigError

__all__ = ["resource_root", "resolve_resource", "list_resources"]

_KINDS = ("judges", "prompts", "configs")


def resource_root() -> Path:
    """The folder holding `judges/`, `prompts/` and `configs/`."""
    env = os.environ.get("RLAIF_HOME")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    if all((checkout / part).exists() for part in ("pyproject.toml", "judges", "prompts", "configs")):
        return checkout
    return Path(__file__).resolve().parent / "_data"


def list_resources(kind: str, suffixes: tuple[str, ...] = (".yaml", ".yml")) -> list[Path]:
    """Every file of one kind (e.g. all judge YAMLs), sorted."""
    if kind not in _KINDS:
        raise ValueError(f"unknown resource kind {kind!r}; expected one of {_KINDS}")
    base = resource_root() / kind
    return sorted(p for p in base.rglob("*") if p.suffix in suffixes and p.is_file())


def resolve_resource(name: str | Path, kind: str, suffix: str = ".yaml") -> Path:
    """Resolve a path or a catalogue name (`default`, `judge/pairwise.jinja`) to an existing file."""
    path = Path(name)
    if path.is_file():
        return path
    base = resource_root() / kind
    for candidate in (base / path, base / f"{path}{suffix}"):
        if candidate.is_file():
            return candidate
    known = [str(p.relative_to(base).with_suffix("")) for p in list_resources(kind, (suffix,))]
    hint = difflib.get_close_matches(str(path), known, n=1)
    did_you_mean = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"no {kind} file {str(name)!r} (looked in {base}).{did_you_mean} Known: {', '.join(known) or 'none'}")
