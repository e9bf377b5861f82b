"""How much a judge's verdicts move when nothing that matters changes: the noise floor and template sensitivity.

Both are the same question asked of several readings of the same gold items:

- `--retest K`: the judge judges every item K times under what legitimately varies between two runs of it (a
  different principle draw where principles are sampled, other sampled rationales where the judge samples).
  Its self-agreement is the noise floor: agreement with humans cannot be read without it (a judge that agrees
  with itself 60% of the time cannot agree with anyone much more).
- `--templates`: the judge judges every item under each wording of its template (same meaning, other words
  and layout). A robust judge keeps its verdicts; the share of items whose verdict changes is the sensitivity.

For the items judged in every reading: each reading's accuracy (no ties) against the gold labels, the spread of
those accuracies, the share of items whose verdict is not the same in all readings, the mean agreement between
two readings, and Fleiss' kappa of the readings treated as raters (the judge's kappa with itself), each with a
bootstrap 95% interval (resampling whole prompts when gold items share one).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from rlaif.audit import metrics as M
from rlaif.audit.judging import AuditRecord
from rlaif.audit.resampling import Resamples

__all__ = ["readings_agreement", "retest_varies", "variation_markdown"]


def _num(x) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 4)


def _changed(*verdicts) -> float:
    v = np.stack(verdicts)
    return float(np.mean((v != v[0]).any(axis=0))) if v.shape[1] else float("nan")


def _pairwise(*verdicts) -> float:
    rates = [np.mean(a == b) for a, b in combinations(verdicts, 2)]
    return float(np.mean(rates)) if rates and len(verdicts[0]) else float("nan")


def _fleiss(*verdicts) -> float:
    return M.fleiss_kappa([list(col) for col in zip(*verdicts)]) if len(verdicts[0]) else float("nan")


def readings_agreement(readings: dict[str, list[AuditRecord]], tie_margin: float = 0.0, n_boot: int = 2000,
                       seed: int = 0) -> dict[str, Any]:
    """Several readings of the same gold items (same order of items in every list), compared with each other and
    with the gold labels."""
    names = list(readings)
    if len(names) < 2:
        raise ValueError("readings_agreement needs at least two readings")
    n_items = len(readings[names[0]])
    both = [i for i in range(n_items) if all(readings[n][i].labeled for n in names)]
    gold = np.array([readings[names[0]][i].item.label for i in both], dtype=object).astype(str)
    verdicts = [M.verdicts_from_p(np.array([readings[n][i].p_a for i in both], dtype=float), tie_margin) for n in names]
    prompts = [readings[names[0]][i].item.prompt for i in both]
    boot = Resamples.draw(len(both), n_boot, seed, prompts)  # whole prompts when some prompt holds several items

    def with_ci(stat, *arrays) -> dict:
        low, high = boot.ci(stat, *arrays) if len(both) else (np.nan, np.nan)
        return {"value": _num(stat(*arrays)) if len(both) else None, "ci95": [_num(low), _num(high)]}

    per_reading = {n: with_ci(M.accuracy_no_ties, gold, v) for n, v in zip(names, verdicts)}
    values = [e["value"] for e in per_reading.values() if e["value"] is not None]
    return {
        "readings": names, "n_items": n_items, "n_judged_in_all": len(both),
        "bootstrap_unit": "item" if boot.clusters is None else "prompt",
        "accuracy_no_ties": per_reading,
        "accuracy_spread": _num(max(values) - min(values)) if values else None,
        "share_verdict_changes": with_ci(_changed, *verdicts),
        "mean_pairwise_agreement": with_ci(_pairwise, *verdicts),
        "fleiss_kappa": with_ci(_fleiss, *verdicts),
        "pairwise_changes": {f"{a} vs {b}": _num(np.mean(verdicts[i] != verdicts[j])) if len(both) else None
                             for (i, a), (j, b) in combinations(enumerate(names), 2)},
    }


def retest_varies(configs: list[Any], n_principles: list[int]) -> list[str]:
    """What differs between two repeats of judges with these configs (one per single judge or ensemble member,
    with the size of its constitution): [] when the repeats are identical by construction."""
    varies = []
    for config, n in zip(configs, n_principles):
        sel = config.principles
        if sel.mode == "sample" and sel.k < n:
            varies.append(f"{config.name}: the principle draw ({sel.k} of {n} per pair)")
        if config.reasoning.enabled and config.reasoning.temperature > 0:
            varies.append(f"{config.name}: sampled rationales (temperature {config.reasoning.temperature})")
    return varies


def _fmt(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    lo, hi = entry["ci95"]
    return f"{entry['value']:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")


def variation_markdown(kind: str, result: dict, human: dict | None) -> list[str]:
    """The report section for a retest (`kind` "retest") or a template sensitivity run ("templates")."""
    if kind == "retest":
        title = f"## Noise floor: the judge against itself ({len(result['readings'])} repeats)"
        varies = result.get("varies") or []
        intro = ("What varied between repeats: " + "; ".join(varies) + "." if varies else
                 "Nothing varies between repeats of this judge (no principle draw, no sampled rationale): the repeats are "
                 "identical by construction, so its self-agreement is 1 and says nothing about noise.")
    else:
        title = f"## Template sensitivity ({len(result['readings'])} wordings)"
        intro = "The same judge under each wording of its template: " + ", ".join(result["readings"]) + "."
    lines = [title, "", intro, "",
             f"Items judged in every {'repeat' if kind == 'retest' else 'wording'}: {result['n_judged_in_all']} of "
             f"{result['n_items']}; intervals resample {'whole prompts' if result['bootstrap_unit'] == 'prompt' else 'items'}.", "",
             "| | value [95% CI] |", "|---|---|"]
    self_label = "self-agreement (mean over pairs of repeats)" if kind == "retest" else "agreement between two wordings (mean)"
    lines += [f"| {self_label} | {_fmt(result['mean_pairwise_agreement'])} |",
              f"| {'kappa with itself' if kind == 'retest' else 'kappa across wordings'} (Fleiss) | {_fmt(result['fleiss_kappa'])} |",
              f"| share of items whose verdict changes | {_fmt(result['share_verdict_changes'])} |",
              f"| spread of accuracy (max - min) | {result['accuracy_spread']} |"]
    if human is not None:
        lines.append(f"| agreement with humans (this audit, accuracy no ties) | {_fmt(human)} |")
    lines += ["", "| reading | accuracy no ties [95% CI] |", "|---|---|"]
    lines += [f"| {name} | {_fmt(e)} |" for name, e in result["accuracy_no_ties"].items()]
    lines.append("")
    return lines
