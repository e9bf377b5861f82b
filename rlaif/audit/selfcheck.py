"""Self-check of the audit: synthetic gold sets judged by synthetic judges whose properties are planted, run through
the very same metric code (`compute_audit`, `compare_arrays`), and how often each 95% interval covers the truth.

Generator (one gold set of n items):
- prompts: every item its own prompt, or prompts holding 1 + Poisson(k - 1) items each (PandaLM: 999 items over
  170 prompts, k ~ 5.9). Each prompt has a difficulty scale exp(N(0, prompt_sd)) that scales the quality differences
  of all its items, a category (`n_categories`) and a judge skill (below): items of one prompt are correlated.
- item: latent quality difference q = scale * N(0, quality_sd) (A minus B, on the humans' logit scale); lengths
  len_a, len_b independent of q (A longer, B longer, or equal 5% of the time): the generator's humans have no
  taste for length, so the judge-minus-human length gap is the planted length bias alone.
- humans: annotator j reads q + Logistic(0, 1) and says tie when the reading lies within +-tie_band, else A or B;
  the gold label is the single annotator's, or the majority of 3 (`gold.majority`: no majority -> tie).
- judge: logit L = (skill + category offset + N(0, judge prompt_sd) per prompt) * q; in each presentation order
  the logit for A is L + position * (+1 if A is shown first, -1 if B is) + length * (+1 if A is longer, -1 if B is)
  + N(0, order_noise); it reports sigmoid(temperature * logit) per order (temperature > 1: overconfident, the
  audit's temperature scaling divides by about that), and P(A better) is the mean of the two orders, as the
  pairwise judge combines them. The records are built directly (`Judgment` / `OrderVerdict`), both orders kept.

Truth: every metric computed by the same code on one very large sample (`truth_items`, 200,000 by default) from
the same generator (for prompt designs, ~34,000 prompts). Coverage: the share of simulated audits whose 95%
interval contains that value; detection: the share of audits whose bias flag is raised (the planted-bias judge),
false alarm: the same share for the judge without planted biases.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlaif.audit.compare import compare_arrays
from rlaif.audit.compute import compute_audit
from rlaif.audit.gold import GoldItem, majority
from rlaif.audit.judging import AuditRecord
from rlaif.records import Judgment, OrderVerdict, PrincipleVerdict

__all__ = ["Design", "SimJudge", "DESIGNS", "JUDGES", "GoldSample", "draw", "records", "readings", "compare_readings",
           "truth", "simulate", "coverage_table"]


@dataclass(frozen=True)
class Design:
    """How a synthetic gold set is made."""

    name: str
    annotators: int = 1
    tie_band: float = 0.0
    items_per_prompt: float = 1.0
    prompt_sd: float = 0.0
    quality_sd: float = 2.0
    n_categories: int = 2
    category_skill: tuple[float, ...] = (0.0, 0.0)
    """Added to the judge's skill on each category's prompts (so categories differ)."""


@dataclass(frozen=True)
class SimJudge:
    """A synthetic judge with planted properties."""

    name: str
    skill: float = 1.0
    prompt_sd: float = 0.0
    order_noise: float = 0.8
    position: float = 0.0
    length: float = 0.0
    temperature: float = 1.0


DESIGNS = {
    "single": Design("single annotator, no ties, one item per prompt (LLMBar-like)"),
    "pandalm": Design("3 annotators with ties, ~5.9 items per prompt (PandaLM-like)", annotators=3, tie_band=0.6,
                      items_per_prompt=5.9, prompt_sd=0.7, n_categories=4, category_skill=(0.3, 0.0, -0.2, -0.4)),
}
JUDGES = {
    "plain": SimJudge("no planted position or length bias, underconfident (temperature 0.7)", prompt_sd=0.6,
                      temperature=0.7),
    "biased": SimJudge("position bias 0.4 and length bias 0.4 (logits), overconfident (temperature 2)", prompt_sd=0.6,
                       position=0.4, length=0.4, temperature=2.0),
}


@dataclass
class GoldSample:
    """One synthetic gold set and each judge's two order readings (P(A better) read in order 12 and in order 21)."""

    prompt: np.ndarray
    category: np.ndarray
    label: np.ndarray
    annotators: list[list[str]]
    len_a: np.ndarray
    len_b: np.ndarray
    p12: dict[str, np.ndarray] = field(default_factory=dict)
    p21: dict[str, np.ndarray] = field(default_factory=dict)

    def p_a(self, judge: str) -> np.ndarray:
        return (self.p12[judge] + self.p21[judge]) / 2


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _prompt_sizes(design: Design, n: int, rng: np.random.Generator) -> np.ndarray:
    if design.items_per_prompt <= 1:
        return np.ones(n, dtype=int)
    sizes = 1 + rng.poisson(design.items_per_prompt - 1, size=int(n / design.items_per_prompt * 1.5) + 10)
    while sizes.sum() < n:
        sizes = np.concatenate([sizes, 1 + rng.poisson(design.items_per_prompt - 1, size=len(sizes))])
    cut = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    sizes = sizes[:cut]
    sizes[-1] -= sizes.sum() - n
    return sizes


def draw(design: Design, judges: dict[str, SimJudge], n: int, rng: np.random.Generator) -> GoldSample:
    """One gold set of n items from `design`, read by every judge in `judges`."""
    sizes = _prompt_sizes(design, n, rng)
    n_prompts = len(sizes)
    prompt = np.repeat(np.arange(n_prompts), sizes)
    scale = np.exp(rng.normal(0.0, design.prompt_sd, n_prompts))[prompt]
    category = rng.integers(0, design.n_categories, n_prompts)[prompt]
    q = scale * rng.normal(0.0, design.quality_sd, n)
    readings = q[:, None] + rng.logistic(0.0, 1.0, (n, design.annotators))
    votes = np.where(np.abs(readings) <= design.tie_band, "tie", np.where(readings > 0, "A", "B"))
    annotators = votes.tolist()
    label = np.array([r[0] if design.annotators == 1 else majority(r) for r in annotators])
    side = rng.choice([1, -1, 0], size=n, p=[0.475, 0.475, 0.05])  # +1: A longer
    base = rng.integers(200, 1200, n)
    extra = rng.integers(20, 600, n)
    len_a, len_b = base + np.where(side > 0, extra, 0), base + np.where(side < 0, extra, 0)
    sample = GoldSample(prompt, category, label, annotators if design.annotators > 1 else [[] for _ in range(n)], len_a, len_b)
    offsets = np.array(design.category_skill, dtype=float)
    for key, j in judges.items():
        skill = (j.skill + rng.normal(0.0, j.prompt_sd, n_prompts))[prompt] + offsets[category]
        logit = skill * q + j.length * side
        x12 = logit + j.position + rng.normal(0.0, j.order_noise, n)  # A shown first
        x21 = logit - j.position + rng.normal(0.0, j.order_noise, n)  # B shown first
        sample.p12[key], sample.p21[key] = _sigmoid(j.temperature * x12), _sigmoid(j.temperature * x21)
    return sample


def records(sample: GoldSample, judge: str) -> list[AuditRecord]:
    """The sample as the audit sees it: gold items and the judge's judgments with both order readings."""
    out = []
    p12, p21, p_a = sample.p12[judge], sample.p21[judge], sample.p_a(judge)
    provenance: dict[str, Any] = {"judge": "synthetic", "model": "synthetic", "backend": "synthetic", "template": "synthetic",
                  "template_version": "0", "constitution_version": "0", "principle_ids": ["helpfulness"]}
    for i in range(len(sample.label)):
        fields: dict[str, Any] = {"id": f"s{i}", "prompt": f"prompt {sample.prompt[i]}", "response_a": "a" * int(sample.len_a[i]),
                                  "response_b": "b" * int(sample.len_b[i]), "label": str(sample.label[i]),
                                  "annotators": sample.annotators[i], "category": f"c{sample.category[i]}"}
        item = GoldItem.model_construct(**fields)
        # every field with a default factory is given: model_construct would call the factories (slow)
        orders = [OrderVerdict.model_construct(order="12", p_first=float(p12[i]), top_logprobs={}, messages=[]),
                  OrderVerdict.model_construct(order="21", p_first=float(p21[i]), top_logprobs={}, messages=[])]
        verdict = PrincipleVerdict.model_construct(principle_id="helpfulness", orders=orders, p_first=float(p_a[i]))
        judgment = Judgment.model_construct(key=f"k{i}", pair_id=f"s{i}", pair_key=f"k{i}", per_principle=[verdict],
                                            p_first=float(p_a[i]), reason=None, members=[], component_p=[], failed_members=[],
                                            **provenance)
        out.append(AuditRecord(item, judgment))
    return out


Reading = tuple[float | None, float | None, float | None]
"""(value, low, high) of one interval metric; the truth uses the value."""


def _r(entry: dict | None) -> Reading:
    if not entry:
        return None, None, None
    low, high = entry.get("ci95") or (None, None)
    return entry.get("value"), low, high


def readings(metrics: dict) -> dict[str, Reading]:
    """Every interval the audit reports, by a flat name."""
    out: dict[str, Reading] = {}
    ag, cal, bias, hum = (metrics.get(k) or {} for k in ("agreement", "calibration", "biases", "humans"))
    for key in ("accuracy_no_ties", "accuracy_with_ties", "cohen_kappa"):
        out[key] = _r(ag.get(key))
    for key in ("ece", "brier", "log_loss", "auc"):
        out[key] = _r(cal.get(key))
    out["brier - base rate"] = _r((cal.get("vs_base_rate") or {}).get("judge_brier_minus_base_rate"))
    if hum:
        out["human loo_accuracy_no_ties"] = (hum.get("loo_accuracy_no_ties"), *(hum.get("loo_accuracy_no_ties_ci95") or (None, None)))
    flags = bias.get("flags") or {}
    for key, name in (("position_bias", "first_position_rate"), ("length_bias", "length gap judge - humans")):
        if key in flags:
            out[name] = _r(flags[key])
    for cat, row in (metrics.get("by_category") or {}).items():
        out[f"by_category accuracy [{cat}]"] = (row.get("accuracy_no_ties"), *(row.get("accuracy_no_ties_ci95") or (None, None)))
    base = metrics.get("baselines") or {}
    for rule, row in (base.get("rules") or {}).items():
        for key in ("accuracy_no_ties", "accuracy_with_ties", "cohen_kappa"):
            out[f"baseline {rule} {key}"] = _r(row.get(key))
    if base.get("length_controlled"):
        out["length-controlled accuracy"] = _r(base["length_controlled"].get("accuracy_no_ties"))
    versus = base.get("judge_vs_best_length_rule")
    if versus:
        out[f"judge - best length rule [{versus['rule']}]"] = _r(versus.get("judge_minus_rule"))
    return out


def compare_readings(result: dict) -> dict[str, Reading]:
    """The intervals of `compare_arrays` (differences B - A), by a flat name."""
    out: dict[str, Reading] = {}
    for key in ("accuracy_no_ties", "cohen_kappa", "brier", "log_loss"):
        if key in result:
            row = result[key]
            out[f"compare {key} difference"] = (row.get("difference"), *(row.get("ci95") or (None, None)))
    for cat, row in (result.get("by_category") or {}).items():
        out[f"compare by_category accuracy difference [{cat}]"] = (row.get("difference"), *(row.get("ci95") or (None, None)))
    return out


def _family(name: str) -> str:
    """A metric's row in the table: per-category and per-rule names share one row."""
    if name.startswith("judge - best length rule"):
        return "judge - best length rule"
    return name.split(" [")[0]


def _audit_all(sample: GoldSample, judges: dict[str, SimJudge], n_boot: int, seed: int, compare: bool) -> dict:
    out: dict = {}
    for key in judges:
        out[key] = compute_audit(records(sample, key), n_boot=n_boot, seed=seed)
    if compare and len(judges) == 2:
        a, b = list(judges)
        out["compare"] = compare_arrays(sample.label, sample.p_a(a), sample.p_a(b), clusters=sample.prompt,
                                        categories=[f"c{c}" for c in sample.category])
    return out


def _values(audits: dict, judges: dict[str, SimJudge]) -> dict[str, dict[str, float]]:
    """judge (or "compare") -> metric name -> value."""
    out = {key: {k: v[0] for k, v in readings(audits[key]).items() if v[0] is not None} for key in judges}
    if "compare" in audits:
        out["compare"] = {k: v[0] for k, v in compare_readings(audits["compare"]).items() if v[0] is not None}
        for key in judges:  # the rule the judge is compared with may differ between samples: keep both differences
            base = audits[key].get("baselines") or {}
            rules = base.get("rules") or {}
            judge_acc = audits[key]["agreement"]["accuracy_no_ties"]["value"]
            for rule in ("always_longer", "always_shorter"):
                if rule in rules and rules[rule]["accuracy_no_ties"]["value"] is not None:
                    out[key][f"judge - best length rule [{rule}]"] = judge_acc - rules[rule]["accuracy_no_ties"]["value"]
    return out


def truth(design: Design, judges: dict[str, SimJudge], n_items: int = 200_000, seed: int = 12345) -> dict[str, dict[str, float]]:
    """Each metric on one very large sample from the generator, computed by the same code (unrounded where the
    audit rounds: differences are recomputed from the two sides)."""
    sample = draw(design, judges, n_items, np.random.default_rng(seed))
    return _values(_audit_all(sample, judges, n_boot=2, seed=0, compare=True), judges)


@dataclass
class _Tally:
    covered: int = 0
    total: int = 0
    width: float = 0.0
    missing: int = 0

    def add(self, low, high, true: float | None) -> None:
        if true is None:
            return
        if low is None or high is None:
            self.missing += 1
            return
        self.total += 1
        self.covered += bool(low <= true <= high)
        self.width += high - low


def _wilson(k: int, n: int) -> tuple[float, float]:
    if not n:
        return math.nan, math.nan
    z, p = 1.959964, k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def simulate(design: Design, judges: dict[str, SimJudge], n: int, sims: int, truths: dict[str, dict[str, float]],
             n_boot: int = 2000, seed: int = 0, compare: bool = True,
             progress: Callable[[int], None] | None = None) -> dict:
    """`sims` audits of n-item gold sets: per judge (and "compare") and metric family, coverage of the 95% intervals
    (covered / total, mean width, intervals missing); per judge, how often each bias flag was raised."""
    tallies: dict[str, dict[str, _Tally]] = defaultdict(lambda: defaultdict(_Tally))
    flags: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    units: set[str] = set()
    rng = np.random.default_rng(seed)
    for s in range(sims):
        sample = draw(design, judges, n, rng)
        audits = _audit_all(sample, judges, n_boot, seed + s, compare)
        for key in judges:
            units.add(audits[key].get("bootstrap_unit", "?"))
            true = truths[key]
            for name, (_, low, high) in readings(audits[key]).items():
                tallies[key][_family(name)].add(low, high, true.get(name))
            for flag, row in ((audits[key].get("biases") or {}).get("flags") or {}).items():
                flags[key][flag] += bool(row["flagged"])
        if "compare" in audits:
            for name, (_, low, high) in compare_readings(audits["compare"]).items():
                tallies["compare"][_family(name)].add(low, high, truths["compare"].get(name))
        if progress:
            progress(s + 1)
    return {
        "design": asdict(design), "n": n, "sims": sims, "n_boot": n_boot, "bootstrap_units": sorted(units),
        "coverage": {key: {fam: {"covered": t.covered, "total": t.total, "coverage": t.covered / t.total if t.total else None,
                                 "coverage_ci95": _wilson(t.covered, t.total), "mean_width": t.width / t.total if t.total else None,
                                 "missing": t.missing}
                           for fam, t in fams.items()} for key, fams in tallies.items()},
        "flag_rates": {key: {flag: count / sims for flag, count in f.items()} for key, f in flags.items()},
    }


def coverage_table(results: list[dict], low: float = 0.93, high: float = 0.97) -> Iterator[str]:
    """Markdown: one row per metric family and judge, one column per (design, n): coverage (mean width); cells
    outside [low, high] are marked with an asterisk."""
    columns = [(r["design"]["name"], r["n"]) for r in results]
    rows: dict[tuple[str, str], dict[tuple[str, int], str]] = defaultdict(dict)
    for r in results:
        for key, fams in r["coverage"].items():
            for fam, c in fams.items():
                if c["coverage"] is None:
                    continue
                mark = "" if low <= c["coverage"] <= high else " *"
                cell = f"{c['coverage']:.3f}{mark} ({c['mean_width']:.3f})" if c["mean_width"] > 0 else "always exact (width 0)"
                rows[(fam, key)][(r["design"]["name"], r["n"])] = cell
    short = {name: name.split(",")[0].split(" (")[0] for name, _ in columns}
    yield "| metric | judge | " + " | ".join(f"{short[d]} n={n}" for d, n in columns) + " |"
    yield "|---|---|" + "---|" * len(columns)
    for (fam, key) in sorted(rows, key=lambda k: (k[0].startswith("compare"), k[0], k[1])):
        yield f"| {fam} | {key} | " + " | ".join(rows[(fam, key)].get(c, "") for c in columns) + " |"

