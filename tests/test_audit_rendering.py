"""What the audit report says and how it is shown: a bias that was not measured reads n/a, the HTML page is the
markdown rendered (emphasis, lists, tables; raw HTML from a gold file escaped), and the terminal shows no image
links. Synthetic records, no model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rlaif import cli
from rlaif.audit.folder import audit_metrics, save_audit
from rlaif.audit.gold import GoldItem
from rlaif.audit.judging import AuditRecord
from rlaif.backends import Choice, Completion, FakeBackend
from rlaif.backends.pool import BackendPool
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
    flag = json.loads((tmp_path / "pw" / "metrics.json").read_text())["biases"]["flags"]["position_bias"]
    assert flag["flagged"] is None, "metrics.json says not measured too, not 'not flagged'"
    assert _bias_line(report, "length bias").startswith("- length bias: ")  # the length flag is measured as before
    pairwise = _bias_line(_write(tmp_path / "pair", "pairwise"), "position bias")
    assert pairwise.startswith("- position bias: not flagged; first_position_rate 0.500"), pairwise


def test_html_report_renders_the_markdown_and_escapes_gold_text(tmp_path):
    hostile = "<script>alert(1)</script>"
    save_audit(tmp_path, *audit_metrics([AuditRecord(_item(i, hostile), _pairwise(i)) for i in range(N)],
                                        {"judge": {"kind": "pairwise"}}, n_boot=50),
               {"judge": "j", "gold": "gold.jsonl"}, ["## Against the baseline", "", "**pass**: within the noise.", ""])
    page = (tmp_path / "report.html").read_text()
    assert "<strong>pass</strong>: within the noise." in page and "**" not in page
    assert "<li>Position consistency" in page and "<ul>" in page  # the bias bullets are a list
    assert "<th>metric</th>" in page and "<td>accuracy_no_ties</td>" in page  # tables, with their header row
    assert "<h2>Biases</h2>" in page and '<img src="reliability.png"' in page
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # raw HTML from a gold file is text


def _gold_file(path: Path) -> Path:
    rows = [{"id": f"g{i}", "prompt": f"question {i}", "response_a": f"good answer {i}" if i % 2 else f"bad answer {i}",
             "response_b": f"bad answer {i}" if i % 2 else f"good answer {i}", "label": "A" if i % 2 else "B"}
            for i in range(N)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fake_judge(monkeypatch) -> None:
    """P(first shown better) 0.9 on the good answer, except every fifth question."""
    def handler(request):
        user = request.messages[-1].content
        i = int(re.search(r"question (\d+)", user).group(1))
        good_first = user.index(f"good answer {i}") < user.index(f"bad answer {i}")
        p = 0.9 if good_first != (i % 5 == 0) else 0.1
        return Completion(choices=[Choice(text="A", logprobs=[{"A": math.log(p), "B": math.log(1 - p)}], tokens=1)])

    backend = FakeBackend(handler)
    monkeypatch.setattr(BackendPool, "get", lambda self, cfg: backend)


def test_terminal_shows_no_image_links(tmp_path, monkeypatch, capsys):
    gold = _gold_file(tmp_path / "gold.jsonl")
    _fake_judge(monkeypatch)
    run = ["audit", "--quiet", "--bootstrap", "50", "--gold", str(gold)]
    assert cli.main([*run, "--out", str(tmp_path / "v1")]) == 0
    assert cli.main([*run, "--out", str(tmp_path / "v2"), "--baseline", str(tmp_path / "v1")]) == 0
    assert cli.main(["audit", "compare", str(tmp_path / "v1"), str(tmp_path / "v2"), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "## Against the baseline" in out and "Judge comparison" in out
    assert not [line for line in out.splitlines() if "![" in line], out
    assert f"plots: {tmp_path / 'v2' / 'reliability.png'}, {tmp_path / 'v2' / 'coverage.png'}\n" in out
    assert "![reliability.png](reliability.png)" in (tmp_path / "v2" / "report.md").read_text()  # the file keeps them
