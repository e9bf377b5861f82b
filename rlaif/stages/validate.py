"""`rlaif validate`: check every judge and run config, and what they reference, without a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlaif.config import (
    EnsembleJudgeConfig,
    JudgeConfig,
    LoopConfig,
    ReviseConfig,
    RunConfig,
    load_judge_config,
    load_judge_spec,
    load_yaml_model,
    sampling_problem,
)
from rlaif.errors import RlaifError
from rlaif.judging.prompting import load_constitution, load_template
from rlaif.records import PromptItem
from rlaif.resources import list_resources, resolve_resource
from rlaif.stages.reviser import round_principle
from rlaif.store.runfolder import read_rows

__all__ = ["validate_judge", "validate_run", "validate_all"]


def validate_judge(path: Path) -> str:
    """Schema, template, constitution, principle ids, and a test render with every variable."""
    spec = load_judge_spec(path)
    if not isinstance(spec, JudgeConfig):
        return validate_ensemble(spec)
    config: JudgeConfig = spec
    problem = sampling_problem(config) if config.mode == "pairwise" else None
    if problem:
        raise RlaifError(f"{path}: {problem}")
    template = load_template(config.template)
    constitution = load_constitution(config.constitution)
    if config.principles.mode == "fixed":
        constitution.get(config.principles.ids)
    principle = constitution.principles[0].model_dump()
    if config.mode == "pointwise":
        constitution.get(list(config.pointwise.weights))  # a weight for an unknown principle is a typo
        template.render(principle=principle, prompt="p", response="r",
                        min_score=config.pointwise.min_score, max_score=config.pointwise.max_score)
    else:
        messages = template.render(principle=principle, prompt="p", response_a="a", response_b="b",
                                   marker=config.reasoning.marker)
        if config.reasoning.enabled and not any(config.reasoning.marker in m.content for m in messages):
            raise RlaifError(f"{path}: reasoning is enabled but template {config.template} never shows the judge "
                             f"the marker {config.reasoning.marker!r} (use judge/pairwise-reasoning.jinja)")
    principles = len(constitution.principles)
    return f"judge {config.name}: template {template.version}, constitution {constitution.version} ({principles} principles)"


def validate_ensemble(config: EnsembleJudgeConfig) -> str:
    """Every member is a valid single pairwise judge of the catalogue (or a path)."""
    for name in config.ensemble.members:
        member = load_judge_spec(name)
        if not isinstance(member, JudgeConfig):
            raise RlaifError(f"ensemble {config.name}: member {name} is itself an ensemble")
        if member.mode != "pairwise":
            raise RlaifError(f"ensemble {config.name}: member {name} is a {member.mode} judge; members must be pairwise")
        validate_judge(resolve_resource(name, "judges"))
    return f"ensemble {config.name}: {config.ensemble.aggregate} of {', '.join(config.ensemble.members)}"


def validate_run(path: Path) -> str:
    config: RunConfig = load_yaml_model(path, RunConfig)
    judge = load_judge_spec(config.judge)
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    if errors:
        raise RlaifError(f"{path}: prompt set {config.prompts} has {len(errors)} invalid rows, "
                         f"first: line {errors[0].line}: {errors[0].error}")
    return f"run config {path.stem}: {len(prompts)} prompts, judge {judge.name}"


def validate_loop(path: Path) -> str:
    config: LoopConfig = load_yaml_model(path, LoopConfig)
    judge = load_judge_config(config.judge)
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    if errors or len(prompts) < config.eval.prompts + 2:
        raise RlaifError(f"{path}: prompt set {config.prompts} has {len(errors)} invalid rows and {len(prompts)} prompts "
                         f"(needs at least {config.eval.prompts + 2})")
    return f"loop config {path.stem}: {len(prompts)} prompts ({config.eval.prompts} held out), judge {judge.name}"


def validate_revise(path: Path) -> str:
    """Schema, both templates rendered with every variable, constitution, principle ids and the prompt set."""
    config: ReviseConfig = load_yaml_model(path, ReviseConfig)
    constitution = load_constitution(config.constitution)
    principle = round_principle(constitution, config.principles, "item", 1).model_dump()
    critique = load_template(config.critique_template)
    critique.render(principle=principle, prompt="p", response="r")
    revision = load_template(config.revision_template)
    revision.render(principle=principle, prompt="p", response="r", critique="c")
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    if errors or not prompts:
        raise RlaifError(f"{path}: prompt set {config.prompts} has {len(errors)} invalid rows and {len(prompts)} prompts")
    return (f"revise config {path.stem}: {len(prompts)} prompts, {config.rounds} rounds, templates {critique.version} + "
            f"{revision.version}, constitution {constitution.version}")


def validate_all(paths: list[Path], echo: Callable[[str], None] = print) -> list[str]:
    """Validate the given files, or the whole catalogue; returns the problems found (empty = all valid)."""
    problems = []
    if not paths:
        paths = list_resources("judges") + list_resources("configs")
        problems += _validate_templates(echo)
    for path in paths:
        keys = yaml_keys(path)
        is_run = path.parent.name == "configs" or (path.parent.name != "judges" and "judge" in keys)
        check = (validate_loop if {"reward", "ppo"} & keys else validate_run) if is_run else validate_judge
        if is_run and "rounds" in keys:
            check = validate_revise
        try:
            echo(f"ok  {path}: " + check(path))
        except RlaifError as exc:
            problems.append(str(exc))
            echo(f"BAD {path}")
    return problems


def _validate_templates(echo: Callable[[str], None]) -> list[str]:
    """Every judge template under prompts/judge/ (those no judge names yet too, e.g. the paraphrases that
    `rlaif audit --templates` uses): it parses, declares its version, and renders with a judge's variables."""
    problems = []
    principle = {"id": "p", "name": "Principle", "text": "Prefer the better response."}
    variables = {"principle": principle, "prompt": "p", "response": "r", "response_a": "a", "response_b": "b",
                 "marker": "Verdict:", "min_score": 1, "max_score": 9}
    for path in list_resources("prompts", (".jinja",)):
        if path.parent.name != "judge":
            continue
        try:
            template = load_template(path)
            template.render(**variables)
            echo(f"ok  {path}: template {template.version}")
        except RlaifError as exc:
            problems.append(str(exc))
            echo(f"BAD {path}")
    return problems


def yaml_keys(path: Path) -> set[str]:
    """Top-level keys, to tell a run config (has `judge`) from a judge file."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:
        return set()
    return set(data) if isinstance(data, dict) else set()
