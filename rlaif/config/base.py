"""What every config model shares: frozen, unknown keys are errors, and one YAML loader that turns every
failure into a single clear `ConfigError` naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rlaif.errors import ConfigError

__all__ = ["ConfigModel", "load_yaml_model", "DEFAULT_MODEL", "UNION_TAGS"]

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The embedded model (rlaif.models), used wherever a config names no model."""

UNION_TAGS = {"vllm", "openai"}
"""Tags pydantic inserts into error locations of the backend union ('backend.vllm.max_model_len')."""

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Base of every config: frozen, and a typo in a YAML key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_path(loc: tuple) -> str:
    """'backend.max_model_len', without the union tag pydantic inserts ('backend.vllm.max_model_len')."""
    parts = [str(p) for i, p in enumerate(loc) if not (i and p in UNION_TAGS and str(loc[i - 1]) in ("backend", "policy"))]
    return ".".join(parts) or "<root>"


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Read a YAML file into a config model, turning every failure into one clear ConfigError."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_field_path(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{path}: invalid {model.__name__}: {problems}") from exc


