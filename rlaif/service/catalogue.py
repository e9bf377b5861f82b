"""The judges a service is started with: their specs, their sync judges (built once), and what /v1/judges shows."""

from __future__ import annotations

from typing import Any

from rlaif.config.judge import EnsembleJudgeConfig, JudgeSpec, load_judge_spec
from rlaif.judging.base import PairJudge
from rlaif.judging.factory import make_judge
from rlaif.judging.pointwise import PointwiseJudge
from rlaif.service.engines import Engines

__all__ = ["Catalogue", "UnknownJudge"]


class UnknownJudge(LookupError):
    """A judge name the service was not started with, or one of the wrong kind (the message says which)."""


def _mode(spec: JudgeSpec) -> str:
    return "pairwise" if isinstance(spec, EnsembleJudgeConfig) else spec.mode


class Catalogue:
    """Judge specs by name; every engine is opened at start, so the first request does not wait for one."""

    def __init__(self, names: list[str], engines: Engines):
        self.specs: dict[str, JudgeSpec] = {}
        for name in names:
            spec = load_judge_spec(name)
            self.specs[spec.name] = spec
        self.engines = engines
        sync = engines.backends(bulk=False)
        self.sync_judges: dict[str, PairJudge | PointwiseJudge] = {
            name: make_judge(spec, sync, _mode(spec), "the service")
            for name, spec in self.specs.items()}

    def name(self, requested: str | None, mode: str) -> str:
        """The judge to use: the one requested (it must be in the catalogue and of `mode`), else the first of `mode`."""
        if requested is None:
            for name, spec in self.specs.items():
                if _mode(spec) == mode:
                    return name
            raise UnknownJudge(f"this service has no {mode} judge; start it with one (rlaif serve --judge NAME)")
        if requested not in self.specs:
            raise UnknownJudge(f"unknown judge {requested!r}; this service has: {', '.join(self.specs)} (GET /v1/judges)")
        if _mode(self.specs[requested]) != mode:
            raise UnknownJudge(f"judge {requested!r} is a {_mode(self.specs[requested])} judge; this route needs a {mode} judge")
        return requested

    def mode(self, name: str) -> str:
        return _mode(self.specs[name])

    def pairwise(self, requested: str | None) -> PairJudge:
        return self.sync_judges[self.name(requested, "pairwise")]  # type: ignore[return-value]

    def pointwise(self, requested: str | None) -> PointwiseJudge:
        return self.sync_judges[self.name(requested, "pointwise")]  # type: ignore[return-value]

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, judge in self.sync_judges.items():
            spec, told = self.specs[name], judge.describe()
            out.append({"id": name, "object": "judge", "mode": _mode(spec), "description": getattr(spec, "description", ""),
                        "fingerprint": getattr(judge, "fingerprint", None),
                        "template": told.get("template"), "constitution": told.get("constitution"),
                        "model": None if isinstance(spec, EnsembleJudgeConfig) else spec.backend.model,
                        "backend": None if isinstance(spec, EnsembleJudgeConfig) else spec.backend.kind})
        return out
