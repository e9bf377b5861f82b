"""Constitutions and judge templates: the written rules the judge follows, each with a version.

A template is a Jinja file with one `{% block %}` per chat role (`system`, `user`, optionally
`assistant`), rendered with `StrictUndefined` in a sandbox. Text under judgment is untrusted: the
`untrusted` filter defuses our frame markers and chat-template control tokens inside it, so a response
cannot close the frame around it or open a new chat turn.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlaif.errors import ConfigError
from rlaif.records import Message
from rlaif.resources import resolve_resource

__all__ = ["Principle", "Constitution", "JudgeTemplate", "neutralize", "load_constitution", "load_template"]

_ROLES = ("system", "user", "assistant")
_VERSION_RE = re.compile(r"rlaif-template\s+version=(\S+)")
# [BEGIN X] / [END X] frame markers, and chat control tokens such as <|im_end|> or <|eot_id|>.
_FRAME_RE = re.compile(r"\[(\s*)(begin|end)\b", re.IGNORECASE)
_CHAT_TOKEN_RE = re.compile(r"<\|([^|<>]{0,40})\|>")


def neutralize(text: str) -> str:
    """Defuse frame markers and chat control tokens inside untrusted text; other text is unchanged."""
    text = str(text)  # a missing (StrictUndefined) variable raises UndefinedError here -> ConfigError
    text = _FRAME_RE.sub(lambda m: f"({m.group(1)}{m.group(2)}", text)
    return _CHAT_TOKEN_RE.sub(lambda m: f"< |{m.group(1)}| >", text)


class Principle(BaseModel):
    """One written principle: its id, short name and the text the judge sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str
    text: str = Field(min_length=10)


class Constitution(BaseModel):
    """A versioned list of principles."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str
    principles: list[Principle] = Field(min_length=1)

    def get(self, ids: list[str]) -> list[Principle]:
        by_id = {p.id: p for p in self.principles}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ConfigError(f"constitution {self.name!r} has no principle {missing}; known: {sorted(by_id)}")
        return [by_id[i] for i in ids]

    def select(self, mode: str, k: int, ids: list[str], seed: int, item_key: str) -> list[Principle]:
        """Principles for one item: `all`, the `fixed` ids, or `k` drawn with a seed tied to the item."""
        if mode == "all":
            return list(self.principles)
        if mode == "fixed":
            return self.get(ids)
        rng = random.Random(f"{seed}:{item_key}")
        return rng.sample(list(self.principles), min(k, len(self.principles)))


def load_constitution(name: str | Path) -> Constitution:
    path = resolve_resource(name, "prompts")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        constitution = Constitution.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid constitution: {exc}") from exc
    ids = [p.id for p in constitution.principles]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: duplicate principle ids")
    return constitution


class JudgeTemplate:
    """A parsed judge template: its name, version and the chat roles it renders."""

    def __init__(self, source: str, name: str):
        match = _VERSION_RE.search(source)
        if not match:
            raise ConfigError(f"template {name}: no '{{# rlaif-template version=... #}}' header")
        self.name, self.version = name, match.group(1)
        env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        env.filters["untrusted"] = neutralize
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"template {name}: {exc}") from exc
        self.roles = [r for r in _ROLES if r in self._template.blocks]
        if "user" not in self.roles:
            raise ConfigError(f"template {name}: needs at least a {{% block user %}}")

    def render(self, **variables: object) -> list[Message]:
        """Chat messages for these variables; a missing variable raises ConfigError."""
        messages = []
        try:
            for role in self.roles:
                ctx = self._template.new_context(dict(variables))
                content = "".join(self._template.blocks[role](ctx)).strip()
                messages.append(Message(role=role, content=content))
        except TemplateError as exc:
            raise ConfigError(f"template {self.name}: {exc}") from exc
        return messages


def load_template(name: str | Path) -> JudgeTemplate:
    path = resolve_resource(name, "prompts", suffix=".jinja")
    return JudgeTemplate(path.read_text(encoding="utf-8"), name=str(name))
