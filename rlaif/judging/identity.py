"""A judge's identity: everything that shapes its labels, as a record that needs no backend.

`judge_identity(spec)` reads a judge's config, template and constitution (each ensemble member's too) and opens
no backend, so the catalogue, the resume keys of a run folder and the audit's fingerprints are had without
starting an engine. Every judge `make_judge` builds carries the same record as `judge.identity`, made by the same
functions (`single_identity`, `ensemble_identity`): a key computed from the record is the key the judge gives.

`resolve_spec` and `member_configs` are the one reading of a spec that both `judge_identity` and `make_judge` use:
loaded, adjusted, checked for the caller's mode, an ensemble's members loaded and checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from rlaif.config.judge import EnsembleJudgeConfig, JudgeConfig, JudgeSpec, load_judge_spec, sampling_problem
from rlaif.errors import ConfigError
from rlaif.judging.prompting import Constitution, JudgeTemplate, load_constitution, load_template
from rlaif.records import Provenance, Record, content_key

__all__ = ["JudgeIdentity", "judge_identity", "single_identity", "ensemble_identity", "resolve_spec", "member_configs",
           "spec_mode", "Spec", "Adjust"]

Spec = str | Path | JudgeSpec
"""A judge as callers name it: a catalogue name, a YAML path, or a loaded config."""
Adjust = Callable[[JudgeConfig], JudgeConfig]
"""Rewrites a single judge's config before it is built (every member's, for an ensemble)."""


class Keyed(Protocol):
    """Anything judged by its content key: a `CandidatePair` or a pointwise `ScoreItem`."""

    @property
    def key(self) -> str: ...


class JudgeIdentity(Record):
    """Who a judge is: its config, template and constitution with their versions, the backend and model it is
    configured with, and its fingerprint (the identity of everything that shapes a label). An ensemble's
    template, constitution, backend and model are its members', joined with '+'."""

    name: str
    kind: Literal["pairwise", "pointwise", "ensemble"]
    mode: Literal["pairwise", "pointwise"]
    """What it compares: two responses (pairwise, ensembles too) or one response on a scale (pointwise)."""
    template: str
    template_version: str
    constitution: str
    constitution_version: str
    config: JudgeConfig | EnsembleJudgeConfig
    """The validated config (after any adjustment); `describe()["judge"]` is its JSON form."""
    fingerprint: str
    """A single judge: content_key(config, template version, constitution version); an ensemble: content_key(config,
    [member fingerprints]). Resume keys are content_key(item key, fingerprint)."""
    backend: str
    """The configured backend's kind (vllm, openai, fake): the name that backend gives its judgments."""
    model: str
    """The configured model, as the backend records it in judgments."""
    members: list[JudgeIdentity] = []
    """An ensemble's member judges, in order; empty for a single judge."""

    @property
    def config_data(self) -> dict[str, Any]:
        """The config as JSON data (what the fingerprint and the manifest hold)."""
        return self.config.model_dump(mode="json")

    @property
    def singles(self) -> list[JudgeIdentity]:
        """The single judges behind this one: its members, or itself."""
        return list(self.members) or [self]

    @property
    def single_configs(self) -> list[JudgeConfig]:
        """The config of each single judge behind this one."""
        return [single.config for single in self.singles if isinstance(single.config, JudgeConfig)]

    def key(self, pair: Keyed) -> str:
        """The resume key of this judge's label for a pair: reused on rerun, never redone."""
        return content_key(pair.key, self.fingerprint)

    def item_key(self, item: Keyed) -> str:
        """The resume key of a pointwise judge's score for one response."""
        return content_key(item.key, self.fingerprint)

    def describe(self) -> dict[str, Any]:
        """Config, template and constitution (names and versions), for the run manifest."""
        return {"judge": self.config_data, "template": {"name": self.template, "version": self.template_version},
                "constitution": {"name": self.constitution, "version": self.constitution_version}}

    def provenance(self, principle_ids: list[str] | None = None) -> Provenance:
        """The provenance block of a record this judge stands behind (e.g. a pair it was never asked about)."""
        return Provenance(judge=self.name, model=self.model, backend=self.backend, template=self.template,
                          template_version=self.template_version, constitution_version=self.constitution_version,
                          principle_ids=list(principle_ids or []))


def single_identity(config: JudgeConfig, template: JudgeTemplate, constitution: Constitution) -> JudgeIdentity:
    """The identity of one judge from its config and its loaded template and constitution; a config no judge can
    be built from (identical self-consistency samples, pointwise weights of unknown principles) is a ConfigError."""
    if config.mode == "pairwise":
        problem = sampling_problem(config)
        if problem:
            raise ConfigError(f"judge {config.name}: {problem}")
    else:
        constitution.get(list(config.pointwise.weights))  # unknown ids are an error, not silently ignored
    data = config.model_dump(mode="json")
    return JudgeIdentity(
        name=config.name, kind=config.mode, mode=config.mode, template=template.name, template_version=template.version,
        constitution=constitution.name, constitution_version=constitution.version, config=config,
        fingerprint=content_key(data, template.version, constitution.version),
        backend=config.backend.kind, model=config.backend.model)


def _joined(values: list[str]) -> str:
    """Distinct values in order, joined with '+' (the members' models, backends...)."""
    return "+".join(dict.fromkeys(values))


def ensemble_identity(config: EnsembleJudgeConfig, members: list[JudgeIdentity]) -> JudgeIdentity:
    """The identity of an ensemble from its config and its members' identities."""
    return JudgeIdentity(
        name=config.name, kind="ensemble", mode="pairwise",
        template="+".join(m.template for m in members), template_version="+".join(m.template_version for m in members),
        constitution="+".join(m.constitution for m in members),
        constitution_version="+".join(m.constitution_version for m in members), config=config,
        fingerprint=content_key(config.model_dump(mode="json"), [m.fingerprint for m in members]),
        backend=_joined([m.backend for m in members]), model=_joined([m.model for m in members]), members=members)


def spec_mode(spec: JudgeSpec) -> Literal["pairwise", "pointwise"]:
    """What a judge spec compares: an ensemble is pairwise; a single judge says in its `mode`."""
    return "pairwise" if isinstance(spec, EnsembleJudgeConfig) else spec.mode


def resolve_spec(spec: Spec, mode: str | None = None, purpose: str = "this command",
                 adjust: Adjust | None = None) -> JudgeSpec:
    """The spec loaded; a single judge adjusted. With `mode`, a judge of another kind is refused with one line
    naming the caller (`purpose`) and the kind it needs."""
    if isinstance(spec, (str, Path)):
        spec = load_judge_spec(spec)
    if isinstance(spec, EnsembleJudgeConfig):
        if mode not in (None, "pairwise"):
            raise ConfigError(f"judge {spec.name} is an ensemble of pairwise judges; {purpose} needs a single {mode} judge")
        return spec
    if adjust is not None:
        spec = adjust(spec)
    if mode is not None and spec.mode != mode:
        raise ConfigError(f"judge {spec.name} is a {spec.mode} judge; {purpose} needs a {mode} judge "
                          f"(e.g. {'smollm2-pairwise' if mode == 'pairwise' else 'smollm2-pointwise'})")
    return spec


def member_configs(ensemble: EnsembleJudgeConfig, adjust: Adjust | None = None) -> list[JudgeConfig]:
    """An ensemble's members, loaded, checked (single pairwise judges) and adjusted."""
    configs = []
    for name in ensemble.ensemble.members:
        member = load_judge_spec(name)
        if isinstance(member, EnsembleJudgeConfig):
            raise ConfigError(f"ensemble {ensemble.name}: member {name} is itself an ensemble; list its members instead")
        if member.mode != "pairwise":
            raise ConfigError(f"ensemble {ensemble.name}: member {name} is a {member.mode} judge; members must be pairwise")
        configs.append(adjust(member) if adjust is not None else member)
    return configs


def _loaded(config: JudgeConfig) -> JudgeIdentity:
    return single_identity(config, load_template(config.template), load_constitution(config.constitution))


def judge_identity(spec: Spec, mode: str | None = None, purpose: str = "this command",
                   adjust: Adjust | None = None) -> JudgeIdentity:
    """The identity of the judge `make_judge(spec, ..., mode, purpose, adjust)` would build, without building it:
    the config, template and constitution are read and checked the same way, and no backend is opened."""
    resolved = resolve_spec(spec, mode, purpose, adjust)
    if isinstance(resolved, EnsembleJudgeConfig):
        return ensemble_identity(resolved, [_loaded(member) for member in member_configs(resolved, adjust)])
    return _loaded(resolved)
