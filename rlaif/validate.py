"""`rlaif validate`: check every judge and run config, and what they reference, without a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlaif.config import JudgeConfig, RunConfig, load_yaml_model
from rlaif.errors import RlaifError
from rlaif.prompting import load_constitution, load_template
from rlaif.records import PromptItem
from rlaif.resources import list_resources, resolve_resource
from rlaif.runfolder import read_rows

__all__ = ["validate_judge", "validate_run", "validate_all"]


def validate_judge(path: Path) -> str:
    """Schema, template, constitution, principle ids, and a test render with every variable."""
    config: JudgeConfig = load_yaml_model(path, JudgeConfig)
    template = load_template(config.template)
    constitution = load_constitution(config.constitution)
    if config.principles.mode == "fixed":
        constitution.get(config.principles.ids)
    principle = constitution.principles[0].model_dump()
    if config.mode == "pointwise":
        template.render(principle=principle, prompt="p", response="r",
                        min_score=config.pointwise.min_score, max_score=config.pointwise.max_score)
    else:
        template.render(principle=principle, prompt="p", response_a="a", response_b="b")
    return f"judge {config.name}: template {template.version}, constitution {constitution.version} ({len(constitution.principles)} principles)"


def validate_run(path: Path) -> str:
    from rlaif.config import load_judge_config

    config: RunConfig = load_yaml_model(path, RunConfig)
    judge = load_judge_config(config.judge)
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    if errors:
        raise RlaifError(f"{path}: prompt set {config.prompts} has {len(errors)} invalid rows, first: line {errors[0].line}: {errors[0].error}")
    return f"run config {path.stem}: {len(prompts)} prompts, judge {judge.name}"


def validate_loop(path: Path) -> str:
    from rlaif.config import load_judge_config
    from rlaif.loop import LoopConfig

    config: LoopConfig = load_yaml_model(path, LoopConfig)
    judge = load_judge_config(config.judge)
    prompts, errors = read_rows(resolve_resource(config.prompts, "prompts", suffix=".jsonl"), PromptItem)
    if errors or len(prompts) < config.eval.prompts + 2:
        raise RlaifError(f"{path}: prompt set {config.prompts} has {len(errors)} invalid rows and {len(prompts)} prompts "
                         f"(needs at least {config.eval.prompts + 2})")
    return f"loop config {path.stem}: {len(prompts)} prompts ({config.eval.prompts} held out), judge {judge.name}"


def validate_all(paths: list[Path], echo: Callable[[str], None] = print) -> list[str]:
    """Validate the given files, or the whole catalogue; returns the problems found (empty = all valid)."""
    if not paths:
        paths = list_resources("judges") + list_resources("configs")
    problems = []
    for path in paths:
        keys = yaml_keys(path)
        is_run = path.parent.name == "configs" or (path.parent.name != "judges" and "judge" in keys)
        check = (validate_loop if {"reward", "ppo"} & keys else validate_run) if is_run else validate_judge
        try:
            echo(f"ok  {path}: " + check(path))
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
