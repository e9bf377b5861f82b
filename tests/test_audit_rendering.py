"""What the audit report says and how it is shown: a bias that was not measured reads n/a, the HTML page is the
markdown rendered (emphasis, lists, tables; raw HTML from a gold file escaped), and the terminal shows no image
links. Synthetic records, no model."""

from __future__ import annotations

from pathlib import Path

from rlaif.audit.folder import audit_metrics, save_audit
from rlaif.audit.gold import GoldItem
from rlaif.audit.judging import AuditRecord
from rlaif.records import Judgment, OrderVerdict, PrincipleVerdict

N = 40
PROVENANCE = {"judge": "j", "model": "m", "backend": "fake", "template": "t", "template_version": "1",
              "constitution_version": "1", "principle_ids": ["p1"]}


def _item(i: int, category: str = "c") -> GoldItem:
    return GoldItem(id=f"g{i}", prompt=f"question {i}", response_a="a" * (5 + i % 7), response_b="b" * (6 + i % 5),
                    label="A" if i % 2 else "B", category=category)


def _p_a(i: int) -> float:
    right = i % 4 != 0
    return 0.8 if (i % 2 == 1) == right else 0.2


def _pointwise(i: int) -> Judgment:
    """A pair read from two scores: no order readings, as `judging._pair_judgment` makes it."""
    return Judgment.model_construct(key=f"k{i}", pair_id=f"g{i}", pair_key=f"pk{i}", per_principle=[], p_first=_p_a(i),
                                    reason=None, members=[], **PROVENANCE)


def _pairwise(i: int) -> Judgment:
    """Both orders read, agreeing (p_first is P(response_1 better) in either order: no position bias)."""
    p = _p_a(i)
    orders = [OrderVerdict.model_construct(order=order, p_first=p) for order in ("12", "21")]
    return Judgment.model_construct(key=f"k{i}", pair_id=f"g{i}", pair_key=f"pk{i}", p_first=p, reason=None, members=[],
                                    per_principle=[PrincipleVerdict(principle_id="p1", orders=orders, p_first=p)],
                                    **PROVENANCE)


def _write(out: Path, kind: str, category: str = "c") -> str:
    make = _pointwise if kind == "pointwise" else _pairwise
    records = [AuditRecord(_item(i, category), make(i)) for i in range(N)]
    fingerprint = {"judge": {"name": "j", "kind": kind, "sha": kind}, "gold": {"sha": "g", "n_items": N}}
    metrics, rows = audit_metrics(records, fingerprint, n_boot=50)
    save_audit(out, metrics, rows, {"judge": "j", "gold": "gold.jsonl"})
    return (out / "report.md").read_text()


def _bias_line(report: str, name: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"- {name}:"))


def test_position_bias_of_a_pointwise_judge_reads_not_measured(tmp_path):
    report = _write(tmp_path / "pw", "pointwise")
    line = _bias_line(report, "position bias")
    assert line.startswith("- position bias: n/a (pointwise") and "not flagged" not in line, line
    assert _bias_line(report, "length bias").startswith("- length bias: ")  # the length flag is measured as before
    pairwise = _bias_line(_write(tmp_path / "pair", "pairwise"), "position bias")
    assert pairwise.startswith("- position bias: not flagged; first_position_rate 0.500"), pairwise
