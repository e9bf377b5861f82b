"""The one judge factory: every caller (label, run, score, rank, audit, hygiene, the GRPO reward, the loop)
builds its judge here, from a judge spec (a catalogue name, a path, or a loaded config) and a backend pool.

A pairwise caller gets a `PairwiseJudge` or an `EnsembleJudge` (both are a `PairJudge`); a pointwise caller
gets a `PointwiseJudge`. A judge of the wrong kind is refused with one line saying which kind is needed.
"""

from __future__ import annotations

from typing import Literal, overload

from rlaif.backends.pool import Backends
from rlaif.config.judge import EnsembleJudgeConfig
from rlaif.judging.base import PairJudge
from rlaif.judging.ensemble import EnsembleJudge
from rlaif.judging.identity import Adjust, Spec, member_configs, resolve_spec
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.judging.pointwise import PointwiseJudge

__all__ = ["make_judge"]


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
    variants are the same judge with one field changed. The spec is read as `judge_identity` reads it, so the
    judge's `identity` is the record `judge_identity(spec, mode, purpose, adjust)` gives."""
    resolved = resolve_spec(spec, mode, purpose, adjust)
    if isinstance(resolved, EnsembleJudgeConfig):
        members = [PairwiseJudge(member, backends.get(member.backend)) for member in member_configs(resolved, adjust)]
        return EnsembleJudge(resolved, members)
    if mode == "pointwise":
        return PointwiseJudge(resolved, backends.get(resolved.backend))
    return PairwiseJudge(resolved, backends.get(resolved.backend))
