"""The judges a service is started with: their specs and identities (no engine needed), their synchronous judges
(built once on the service's engines), and what /v1/judges and /v1/models show."""

from __future__ import annotations

from typing import Any

from rlaif.config.judge import JudgeSpec, load_judge_spec
from rlaif.judging.base import PairJudge
from rlaif.judging.factory import make_judge
from rlaif.judging.identity import JudgeIdentity, judge_identity, spec_mode
from rlaif.judging.pointwise import PointwiseJudge
from rlaif.service.engines import Engines

__all__ = ["Catalogue", "UnknownJudge", "INSTANT_NOTE"]

INSTANT_NOTE = ("instant test judge: the `fake` backend answers at once with made-up probabilities; its labels judge "
                "nothing (for measuring the service's own overhead and testing plumbing)")


class UnknownJudge(LookupError):
    """A judge name the service was not started with, or one of the wrong kind (the message says which)."""


class Catalogue:
    """Judge specs by name. `open(engines)` builds the synchronous judges, opening every engine at start so the
    first request does not wait for one; the names, identities and descriptions need no engine."""

    def __init__(self, names: list[str]):
        self.specs: dict[str, JudgeSpec] = {}
        self.identities: dict[str, JudgeIdentity] = {}
        for name in names:
            spec = load_judge_spec(name)
            self.specs[spec.name] = spec
            self.identities[spec.name] = judge_identity(spec)
        self.sync_judges: dict[str, PairJudge | PointwiseJudge] = {}

    def open(self, engines: Engines) -> None:
        sync = engines.backends(bulk=False)
        self.sync_judges = {name: make_judge(spec, sync, spec_mode(spec), "the service") for name, spec in self.specs.items()}

    def identity(self, name: str) -> JudgeIdentity:
        return self.identities[name]

    def name(self, requested: str | None, mode: str) -> str:
        """The judge to use: the one requested (it must be in the catalogue and of `mode`), else the first of `mode`."""
        if requested is None:
            for name, identity in self.identities.items():
                if identity.mode == mode:
                    return name
            raise UnknownJudge(f"this service has no {mode} judge; start it with one (rlaif serve --judge NAME)")
        if requested not in self.specs:
            raise UnknownJudge(f"unknown judge {requested!r}; this service has: {', '.join(self.specs)} (GET /v1/judges)")
        found = self.identities[requested].mode
        if found != mode:
            raise UnknownJudge(f"judge {requested!r} is a {found} judge; this route needs a {mode} judge")
        return requested

    def pairwise(self, requested: str | None) -> PairJudge:
        return self.sync_judges[self.name(requested, "pairwise")]  # type: ignore[return-value]

    def pointwise(self, requested: str | None) -> PointwiseJudge:
        return self.sync_judges[self.name(requested, "pointwise")]  # type: ignore[return-value]

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, identity in self.identities.items():
            instant = "fake" in {single.backend for single in identity.singles}
            description = self.specs[name].description or ""
            out.append({"id": name, "object": "judge", "mode": identity.mode, "kind": identity.kind,
                        "description": INSTANT_NOTE if instant and not description else description,
                        "instant_test_judge": instant, "fingerprint": identity.fingerprint,
                        "template": {"name": identity.template, "version": identity.template_version},
                        "constitution": {"name": identity.constitution, "version": identity.constitution_version},
                        "model": identity.model, "backend": identity.backend})
        return out

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: the judges as OpenAI model objects (the id to send as `judge`)."""
        return [{"id": j["id"], "object": "model", "created": 0, "owned_by": "rlaif", "mode": j["mode"],
                 "description": j["description"]} for j in self.describe()]
