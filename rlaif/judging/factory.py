"""The one judge factory: every caller (label, run, score, rank, audit, hygiene, the GRPO reward, the loop)
builds its judge here, from a judge spec (a catalogue name, a path, or a loaded config) and a backend pool.

A pairwise caller gets a `PairwiseJudge` or an `EnsembleJudge` (both are a `PairJudge`); a pointwise caller
gets a `PointwiseJudge`. A judge of the wrong kind is refused with one line saying which kind is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, overload

from rlaif.backends.pool import Backends
from rlaif.config.judge import EnsembleJudgeConfig, JudgeConfig, JudgeSpec, load_judge_spec
from rlaif.errors import ConfigError
from rlaif.judging.base import PairJudge
from rlaif.judging.ensemble import EnsembleJudge
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.judging.pointwise import PointwiseJudge

__all__ = ["make_judge"]

Spec = str | Path | JudgeSpec
Adjust = Callable[[JudgeConfig], JudgeConfig]


@overload
def make_judge(spec: Spec, backends: Backends, mode: Literal["pairwise"] = "pairwise", purpose: str = ...,
               adjust: Adjust | None = ...) -> PairJudge: ...
@overload
def make_judge(spec: Spec, backends: Backends, mode: Literal["pointwise"], purpose: str = ...,
               adjust: Adjust | None = ...) -> PointwiseJudge: ...
@overload
def make_judge(spec: Spec, backends: Backends, mode: str, purpose: str = ...,
               adjust: Adjust | None = ...) -> PairJudge | PointwiseJudge: ...


def make_judge(spec: Spec, backends: Backends, mode: str = "pairwise", purpose: str = "this command",
               adjust: Adjust | None = None) -> PairJudge | PointwiseJudge:
    """A judge of `mode` from a spec; each judge (and each ensemble member) gets its backend from `backends`.

    `purpose` names the caller in the error a judge of the wrong kind gets ("`rlaif rank`"). `adjust` rewrites
    the judge's config (every member's, for an ensemble) before it is built: the audit's retests and template
    variants are the same judge with one field changed."""
    if isinstance(spec, (str, Path)):
        spec = load_judge_spec(spec)
    if isinstance(spec, EnsembleJudgeConfig):
        if mode != "pairwise":
            raise ConfigError(f"judge {spec.name} is an ensemble of pairwise judges; {purpose} needs a single {mode} judge")
        return EnsembleJudge(spec, [_member(spec, name, backends, adjust) for name in spec.ensemble.members])
    if adjust is not None:
        spec = adjust(spec)
    if spec.mode != mode:
        raise ConfigError(f"judge {spec.name} is a {spec.mode} judge; {purpose} needs a {mode} judge "
                          f"(e.g. {'smollm2-pairwise' if mode == 'pairwise' else 'smollm2-pointwise'})")
    if mode == "pointwise":
        return PointwiseJudge(spec, backends.get(spec.backend))
    return PairwiseJudge(spec, backends.get(spec.backend))


def _member(ensemble: EnsembleJudgeConfig, name: str, backends: Backends, adjust: Adjust | None) -> PairwiseJudge:
    member = load_judge_spec(name)
    if isinstance(member, EnsembleJudgeConfig):
        raise ConfigError(f"ensemble {ensemble.name}: member {name} is itself an ensemble; list its members instead")
    if member.mode != "pairwise":
        raise ConfigError(f"ensemble {ensemble.name}: member {name} is a {member.mode} judge; members must be pairwise")
    if adjust is not None:
        member = adjust(member)
    return PairwiseJudge(member, backends.get(member.backend))

