"""Measures the reproductions judge claims on, defined once.

* :func:`first_reach` / :func:`reach`: where, and at what cost, a curve first hits a target.
* :func:`suboptimality`: ``F - F*``, or relative ``(F - F*) / F*``.
* :func:`exact_optimum`: ``F*`` of a logistic objective by Newton's method.
* :func:`loglog_slope` / :func:`pooled_loglog_slope`: power-law exponents fitted in log-log.
* :func:`non_increasing` / :func:`decreased`: monotonicity of a per-group sequence, with an
  explicit rule for entries with no value.

**The rule for missing values (NaN).** A NaN entry of a sequence judged for monotonicity means
"no value exists" -- e.g. the largest convergent delay when not even ``tau = 0`` converges, or
the best momentum at a delay where no momentum converges. Such an entry ranks *below every
finite value* (as ``-inf``): the quantity has fallen past the bottom of its range. So a finite
value followed by NaN is a decrease, NaN followed by a finite value is an increase (a
violation), and NaN followed by NaN is equal. A group where nothing has a value is therefore
(vacuously) non-increasing, but it has not :func:`decreased`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike

from lowcomm.problems.logistic import LogisticRegression, newton_optimum

__all__ = [
    "decreased",
    "exact_optimum",
    "first_reach",
    "loglog_slope",
    "non_increasing",
    "pooled_loglog_slope",
    "reach",
    "seed_mean",
    "suboptimality",
]


def first_reach(values: ArrayLike, target: float, *, rising: bool = False) -> int | None:
    """Position of the first value that reaches ``target``.

    A value reaches the target when ``value <= target`` (a loss or a gap falling), or with
    ``rising`` when ``value >= target`` (an accuracy climbing). NaN never reaches it.

    Args:
        values: the curve, in order of evaluation.
        target: the level to reach.
        rising: whether the curve reaches the target from below.

    Returns:
        The 0-based position, or None when no value reaches the target.
    """
    array = np.asarray(values, dtype=float)
    hits = np.flatnonzero(array >= target if rising else array <= target)
    return int(hits[0]) if hits.size else None


def reach(values: ArrayLike, costs: ArrayLike, target: float, *, rising: bool = False) -> float:
    """The cost spent when a curve first reaches ``target`` (:func:`first_reach`).

    Args:
        values: the curve, in order of evaluation.
        costs: what had been spent at each evaluation (rounds, uploads, time...), same length.
        target: the level to reach.
        rising: whether the curve reaches the target from below.

    Returns:
        ``costs`` at the first position that reaches the target; NaN when none does.
    """
    where = first_reach(values, target, rising=rising)
    return math.nan if where is None else float(np.asarray(costs, dtype=float)[where])


def suboptimality(loss: pd.Series, f_star: float, *, relative: bool = False) -> pd.Series:
    """The gap ``F - F*`` of a loss curve, or with ``relative`` ``(F - F*) / F*``.

    Args:
        loss: the objective ``F`` along a run.
        f_star: its exact minimum ``F*`` (:func:`exact_optimum`).
        relative: divide by ``F*``.

    Returns:
        The gap, elementwise.
    """
    gap = loss - f_star
    return gap / f_star if relative else gap


def exact_optimum(problem: object, X: ArrayLike, y: ArrayLike) -> float:
    """``F*``, the minimum of a logistic objective on ``(X, y)``, by damped Newton in float64.

    Args:
        problem: the objective; only :class:`LogisticRegression` has a computable optimum.
        X: all training examples (converted to float64).
        y: their labels.

    Returns:
        ``F*`` (:func:`lowcomm.problems.logistic.newton_optimum`); NaN for any other problem
        (e.g. a network, whose optimum is unknown).
    """
    if not isinstance(problem, LogisticRegression):
        return math.nan
    features = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    return float(newton_optimum(problem, features, torch.as_tensor(np.asarray(y)))[1])


def loglog_slope(x: ArrayLike, y: ArrayLike) -> float:
    """The least-squares slope ``p`` of ``log y = p log x + c``: the exponent of ``y ~ x^p``.

    Args:
        x: positive abscissae.
        y: positive values, one per abscissa.

    Returns:
        The slope; NaN with fewer than 2 distinct ``x`` (no line is determined).
    """
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if np.unique(lx).size < 2:
        return math.nan
    return float(np.polyfit(lx, ly, 1)[0])


def pooled_loglog_slope(groups: Sequence[tuple[ArrayLike, ArrayLike]]) -> float:
    """One slope of ``log y`` on ``log x`` shared by all groups, each with its own intercept.

    Each group's logs are centred on their means, and the slope is
    ``sum(dx * dy) / sum(dx^2)`` over all points (the within-group estimator). Groups of one
    point carry no slope information and are dropped.

    Args:
        groups: per group, its ``(x, y)`` (positive).

    Returns:
        The pooled slope; NaN when no group has 2 points or every ``x`` equals its group mean.
    """
    xs, ys = [], []
    for x, y in groups:
        if np.size(x) >= 2:
            lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
            xs.append(lx - lx.mean())
            ys.append(ly - ly.mean())
    if not xs:
        return math.nan
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    denominator = float((x_all**2).sum())
    return math.nan if denominator == 0 else float((x_all * y_all).sum() / denominator)


def _ranked(values: ArrayLike) -> np.ndarray:
    """The values with NaN (no value) ranked below every finite value, as ``-inf``."""
    array = np.asarray(values, dtype=float)
    return np.where(np.isnan(array), -math.inf, array)


def non_increasing(values: ArrayLike) -> bool:
    """Whether the sequence never goes up, NaN ranking lowest (see the module docstring).

    Examples: ``[3, 2, 2]``, ``[3, nan, nan]`` and ``[nan, nan]`` are non-increasing;
    ``[2, 3]`` and ``[3, nan, 1]`` are not.

    Args:
        values: the sequence, in the order of the variable it is judged against.

    Returns:
        Whether every step is ``<=``, under the rule for NaN.
    """
    ranked = _ranked(values)
    return bool((ranked[1:] <= ranked[:-1]).all())  # not np.diff: -inf - -inf is NaN


def decreased(values: ArrayLike) -> bool:
    """Whether the last value is strictly below the first, NaN ranking lowest.

    ``[3, nan]`` decreased; ``[nan, nan]`` and ``[3, 3]`` did not.

    Args:
        values: the sequence (at least one entry).

    Returns:
        Whether ``last < first`` under the rule for NaN.
    """
    ranked = _ranked(values)
    return bool(ranked[-1] < ranked[0])


def seed_mean(values: ArrayLike) -> float:
    """The mean over seeds; NaN when any seed has no value (NaN).

    So a claim is never judged on the seeds that happened to reach a target or stay finite:
    pandas' ``mean`` would skip them silently.
    """
    return float(np.mean(np.asarray(values, dtype=float)))
