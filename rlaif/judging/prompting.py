"""Constitutions and judge templates: the written rules the judge follows, each with a version.

A template is a Jinja file with one `{% block %}` per chat role (`system`, `user`, optionally
`assistant`), rendered with `StrictUndefined` in a sandbox. Text under judgment is untrusted: the
`untrusted` filter defuses our frame markers and chat-template control tokens inside it, so a response
cannot close the frame around it or open a new chat turn.

Rendering is on the hot path of bulk labeling (two prompts per pair), so a block that is straight-line text
(no if/for/set/macro; each string variable only printed, bare or through `untrusted`) is rendered by Jinja once
per value of its other variables (the principle) with placeholders for the strings, and then filled in: the
same text Jinja would give, several times faster. Any other block is rendered by Jinja every time.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import yaml
from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
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
    if "[" not in text and "<|" not in text:
        return text  # nothing to defuse (most texts): skip the two scans
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


_STRAIGHT = (nodes.Output, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Const, nodes.Filter,
             nodes.Block)
_MARK = "\x00rlaif-slot-{}\x00"


def _printed_names(block: nodes.Block) -> dict[str, bool] | None:
    """For a straight-line block: {variable: printed through `untrusted`} of the variables printed whole (bare
    or `| untrusted`) and used nowhere else, plus False-marked names used otherwise; None if the block has
    control flow or anything else that could make its text depend on a string's value."""
    if any(not isinstance(node, _STRAIGHT) for node in block.find_all(nodes.Node)):
        return None
    printed: dict[str, bool] = {}
    simple: set[int] = set()
    for output in block.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.Name):
                printed.setdefault(node.name, False)
                simple.add(id(node))
            elif (isinstance(node, nodes.Filter) and node.name == "untrusted" and isinstance(node.node, nodes.Name)
                  and not node.args and not node.kwargs):
                printed.setdefault(node.node.name, True)
                simple.add(id(node.node))
    twice = {name for name in printed if sum(1 for n in block.find_all(nodes.Name) if n.name == name) > 1}
    elsewhere = {n.name for n in block.find_all(nodes.Name) if id(n) not in simple}
    return {name: filtered for name, filtered in printed.items() if name not in elsewhere | twice}


def _frozen(value: object) -> object:
    """A hashable stand-in for a template variable's value (dicts and lists of plain values)."""
    if type(value) is dict and all(type(v) is str for v in value.values()):
        return tuple(sorted(value.items()))  # the usual case (a principle's fields), without the recursion
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


class _Filled:
    """A block rendered once with placeholders for its string variables, to be filled per call."""

    def __init__(self, role: str, text: str, slots: list[str]):
        self.role = role
        pattern = re.compile("|".join(re.escape(_MARK.format(i)) for i in range(len(slots)))) if slots else None
        self.parts: list[str | int] = []
        position = 0
        for match in pattern.finditer(text) if pattern else ():
            self.parts += [text[position : match.start()], int(match.group()[len("\x00rlaif-slot-") : -1])]
            position = match.end()
        self.parts.append(text[position:])
        self.constant = Message(role=role, content=text.strip()) if not slots else None
        """A block with nothing to fill in (a system block that names only the principle): one message for all."""

    def message(self, values: list[str]) -> Message:
        if self.constant is not None:
            return self.constant
        return Message(role=self.role, content="".join([values[p] if isinstance(p, int) else p for p in self.parts]).strip())


class JudgeTemplate:
    """A parsed judge template: its name, version and the chat roles it renders."""

    def __init__(self, source: str, name: str):
        match = _VERSION_RE.search(source)
        if not match:
            raise ConfigError(f"template {name}: no '{{# rlaif-template version=... #}}' header")
        self.name, self.version = name, match.group(1)
        # Immutable: a template reads its variables and cannot change them (so a value can be keyed once).
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        env.filters["untrusted"] = neutralize
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"template {name}: {exc}") from exc
        self.roles = [r for r in _ROLES if r in self._template.blocks]
        if "user" not in self.roles:
            raise ConfigError(f"template {name}: needs at least a {{% block user %}}")
        blocks = {b.name: b for b in env.parse(source).find_all(nodes.Block)}
        self._printed = {role: _printed_names(blocks[role]) for role in self.roles}
        self._used = {role: {n.name for n in blocks[role].find_all(nodes.Name)} for role in self.roles}
        self._filled: dict[tuple, _Filled] = {}
        self._defused: dict[str, str] = {}
        self._frozen_ids: dict[int, tuple[object, object]] = {}

    def render(self, **variables: object) -> list[Message]:
        """Chat messages for these variables; a missing variable raises ConfigError."""
        try:
            return [self._message(role, variables) for role in self.roles]
        except TemplateError as exc:
            raise ConfigError(f"template {self.name}: {exc}") from exc

    def _jinja(self, role: str, variables: dict[str, object]) -> str:
        return "".join(self._template.blocks[role](self._template.new_context(dict(variables)))).strip()

    def _message(self, role: str, variables: dict[str, object]) -> Message:
        printed = self._printed[role]
        if printed is None:
            return Message(role=role, content=self._jinja(role, variables))
        used = self._used[role]  # a straight-line block reads no variable it does not name
        slots = [name for name, value in variables.items() if isinstance(value, str) and name in printed]
        fixed = {name: value for name, value in variables.items() if name in used and name not in slots}
        key = (role, tuple(slots), tuple((name, self._frozen(value)) for name, value in fixed.items()))
        filled = self._filled.get(key)
        if filled is None:
            text = "".join(self._template.blocks[role](self._template.new_context(
                {**fixed, **{name: _MARK.format(i) for i, name in enumerate(slots)}})))
            if len(self._filled) > 256:
                self._filled.clear()
            filled = self._filled[key] = _Filled(role, text, slots)
        values = [self._untrusted(variables[name]) if printed[name] else str(variables[name]) for name in slots]
        return filled.message(values)

    def _frozen(self, value: object) -> object:
        """`_frozen(value)`, remembered for the object last seen (a judge passes the same principle fields
        object for every pair under that principle; templates cannot change it)."""
        if isinstance(value, str | int | float | bool | None):
            return value
        seen = self._frozen_ids.get(id(value))
        if seen is None or seen[0] is not value:
            if len(self._frozen_ids) > 64:
                self._frozen_ids.clear()
            seen = self._frozen_ids[id(value)] = (value, _frozen(value))
        return seen[1]

    def _untrusted(self, value: object) -> str:
        """The template's own `untrusted` filter, as Jinja would call it, remembered for the texts of the last
        few calls (both orders of a pair show the same three texts)."""
        if type(value) is str:
            done = self._defused.get(value)
            if done is None:
                if len(self._defused) > 64:
                    self._defused.clear()
                done = self._defused[value] = self._template.environment.filters["untrusted"](value)
            return done
        return self._template.environment.filters["untrusted"](value)


def load_template(name: str | Path) -> JudgeTemplate:
    path = resolve_resource(name, "prompts", suffix=".jinja")
    return JudgeTemplate(path.read_text(encoding="utf-8"), name=str(name))
