"""What callers may rely on of a judge, whatever its kind (a single pairwise judge or an ensemble)."""

from __future__ import annotations

from typing import Any, Protocol

from rlaif.records import CandidatePair, Judgment, Message

__all__ = ["PairJudge", "describe"]


class PairJudge(Protocol):
    """Compares two responses: `PairwiseJudge` and `EnsembleJudge` both are one."""

    name: str
    fingerprint: str
    """Identity of everything that shapes a label (config, template and constitution versions)."""

    def key(self, pair: CandidatePair) -> str:
        """Identity of this judge's label for this pair: reused on rerun, never redone."""
        ...

    def judge(self, pairs: list[CandidatePair]) -> list[Judgment]:
        """One judgment per pair, in order: labeled, a tie, or unlabeled with the reason."""
        ...

    def rendered(self, pair: CandidatePair) -> list[list[Message]]:
        """Every judge prompt this pair would be sent as (each principle, order and member)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Config, template and constitution (names and versions), for the run manifest."""
        ...


def describe(config: Any, template_name: str, template_version: str, constitution_name: str,
             constitution_version: str) -> dict[str, Any]:
    """The manifest's account of a judge."""
    return {"judge": config.model_dump(mode="json"),
            "template": {"name": template_name, "version": template_version},
            "constitution": {"name": constitution_name, "version": constitution_version}}
