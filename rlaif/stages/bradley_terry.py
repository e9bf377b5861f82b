"""The Bradley-Terry fit behind `rlaif rank`: fractional wins -> strengths, by Newton's method with a prior.

Pure numpy on a win matrix; see rlaif.stages.rank for how judgments become wins.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["BTFit", "comparison_matrix", "fit_bradley_terry", "components"]


def comparison_matrix(k: int, outcomes: list[tuple[int, int, float | None]]) -> tuple[np.ndarray, dict]:
    """W[i, j] = fractional wins of i over j from (i, j, P(i better) or None); with counts of what was used."""
    wins = np.zeros((k, k))
    counts: Counter[str] = Counter()
    for i, j, p in outcomes:
        if p is None:
            counts["unlabeled"] += 1
            continue
        counts["ties" if p == 0.5 else "decided"] += 1
        wins[i, j] += p
        wins[j, i] += 1.0 - p
    return wins, {"used": counts["decided"] + counts["ties"], "ties": counts["ties"], "unlabeled": counts["unlabeled"]}


class BTFit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strengths: list[float]
    """pi_i, on the scale where the prior's reference has strength 1."""
    iterations: int
    converged: bool


def _log_likelihood(theta: np.ndarray, wins: np.ndarray, prior: float) -> float:
    """Bradley-Terry log-likelihood of fractional wins, plus prior/2 virtual wins and losses against theta = 0."""
    diff = theta[:, None] - theta[None, :]
    ll = -(wins * np.logaddexp(0.0, -diff)).sum()
    return ll - prior / 2.0 * (np.logaddexp(0.0, -theta) + np.logaddexp(0.0, theta)).sum()


def fit_bradley_terry(wins: np.ndarray, prior: float = 1.0, tol: float = 1e-10, max_iter: int = 200) -> BTFit:
    """Maximise the Bradley-Terry likelihood of `wins` (wins[i, j] = fractional wins of i over j) over the
    log-strengths theta by Newton's method with step halving (a regularised logistic fit).

    Each candidate also has prior/2 virtual wins and prior/2 virtual losses against a reference with
    theta = 0 (strength 1): the objective is then strictly concave, every strength finite and the scale
    fixed. With prior = 0 it is the plain maximum-likelihood fit, centred at a geometric mean of 1; it
    does not exist for a candidate without a win or without a loss, which is refused.
    """
    k = wins.shape[0]
    if prior <= 0 and not (np.all(wins.sum(axis=1) > 0) and np.all(wins.sum(axis=0) > 0)):
        raise ValueError("without a prior a candidate with no wins (or no losses) has strength 0 (or infinity); use prior > 0")
    games = wins + wins.T
    theta = np.zeros(k)
    current = _log_likelihood(theta, wins, prior)
    for iteration in range(1, max_iter + 1):  # noqa: B007 (read after the loop: how many steps it took)
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        q = 1.0 / (1.0 + np.exp(-theta))
        grad = wins.sum(axis=1) - (games * p).sum(axis=1) + prior / 2.0 - prior * q
        weights = games * p * p.T
        neg_hessian = np.diag(weights.sum(axis=1) + prior * q * (1.0 - q)) - weights
        step = np.linalg.lstsq(neg_hessian, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-12 and _log_likelihood(theta + t * step, wins, prior) < current - 1e-12 * abs(current):
            t /= 2.0
        theta = theta + t * step
        current = _log_likelihood(theta, wins, prior)
        if np.max(np.abs(t * step)) < tol:
            break
    else:
        iteration = max_iter + 1
    if prior <= 0:
        theta = theta - theta.mean()
    return BTFit(strengths=np.exp(theta).tolist(), iterations=min(iteration, max_iter), converged=iteration <= max_iter)


def components(wins: np.ndarray) -> list[list[int]]:
    """Connected parts of the comparison graph (an edge where a comparison was used)."""
    k, seen, parts = wins.shape[0], set(), []
    games = wins + wins.T
    for start in range(k):
        if start in seen:
            continue
        part, stack = [], [start]
        seen.add(start)
        while stack:
            node = stack.pop()
            part.append(node)
            for other in np.nonzero(games[node] > 0)[0].tolist():
                if other not in seen:
                    seen.add(other)
                    stack.append(other)
        parts.append(sorted(part))
    return parts


