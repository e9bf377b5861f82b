"""Judging, written once above the backends: templates and constitutions (`prompting`), verdict reading
(`verdicts`, `reading`: pure), request planning (`planning`), combining orders, samples and members
(`combining`: pure), the pairwise, ensemble and pointwise judges, `make_judge`, the one factory, and
`judge_identity`, a judge's identity (names, versions, fingerprint, keys) read without opening a backend.

Imports only the shared modules, `rlaif.config` and `rlaif.backends`.
"""

from __future__ import annotations

from rlaif.judging.base import PairJudge
from rlaif.judging.ensemble import EnsembleJudge
from rlaif.judging.factory import make_judge
from rlaif.judging.identity import JudgeIdentity, judge_identity, spec_mode
from rlaif.judging.pairwise import PairwiseJudge
from rlaif.judging.planning import TEXT_REPLY_TOKENS
from rlaif.judging.pointwise import PointwiseJudge, ScoreItem, ScoreRecord
from rlaif.judging.prompting import Constitution, JudgeTemplate, Principle, load_constitution, load_template, neutralize

__all__ = [
    "PairJudge", "PairwiseJudge", "EnsembleJudge", "PointwiseJudge", "ScoreItem", "ScoreRecord", "make_judge",
    "JudgeIdentity", "judge_identity", "spec_mode",
    "Constitution", "JudgeTemplate", "Principle", "load_constitution", "load_template", "neutralize",
    "TEXT_REPLY_TOKENS",
]
