"""Measures the reproductions judge claims on, defined once.

* :func:`first_reach` / :func:`reach`: where, and at what cost, a curve first hits a target.
* :func:`suboptimality`: ``F - F*``, or relative ``(F - F*) / F*``.
* :func:`exact_optimum`: ``F*`` of a logistic objective by Newton's method; :func:`optima`,
  a study's call job computing it once per training set.
* :func:`loglog_slope` / :func:`pooled_loglog_slope`: power-law exponents fitted in log-log.
* :func:`non_increasing` / :func:`decreased`: monotonicity of a per-group sequence, with an
  explicit rule for entries with no value.
* :func:`listed` / :func:`key_numbers`: facts formatted one way for every report; the numbers
  a job's key holds.

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

from lowcomm.experiments.config import RunConfig
from lowcomm.experiments.runner import prepare
from lowcomm.problems.logistic import LogisticRegression, newton_optimum


def first_reach(values: ArrayLike, target: float, *, rising: bool = False) -> int | None:
    """Position (0-based) of the first value that reaches ``target``; None when none does.

    A value reaches the target when ``value <= target`` (a loss or a gap falling), or with
    ``rising`` when ``value >= target`` (an accuracy climbing). NaN never reaches it.
    """
    array = np.asarray(values, dtype=float)
    hits = np.flatnonzero(array >= target if rising else array <= target)
    return int(hits[0]) if hits.size else None


def reach(values: ArrayLike, costs: ArrayLike, target: float, *, rising: bool = False) -> float:
    """The cost spent when a curve first reaches ``target`` (:func:`first_reach`); NaN if never.

    ``costs``: what had been spent at each evaluation (rounds, uploads, time...).
    """
    where = first_reach(values, target, rising=rising)
    return math.nan if where is None else float(np.asarray(costs, dtype=float)[where])


def suboptimality(loss: pd.Series, f_star: float, *, relative: bool = False) -> pd.Series:
    """The gap ``F - F*`` of a loss curve, or with ``relative`` ``(F - F*) / F*``, elementwise."""
    gap = loss - f_star
    return gap / f_star if relative else gap


def exact_optimum(problem: object, X: ArrayLike, y: ArrayLike) -> float:
    """``F*``, the minimum of a logistic objective on ``(X, y)``, by damped Newton in float64.

    See :func:`lowcomm.problems.logistic.newton_optimum`. NaN for any other problem (e.g. a
    network, whose optimum is unknown).
    """
    if not isinstance(problem, LogisticRegression):
        return math.nan
    features = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    return float(newton_optimum(problem, features, torch.as_tensor(np.asarray(y)))[1])


def optima(configs: tuple[RunConfig, ...]) -> pd.DataFrame:
    """``F*`` (:func:`exact_optimum`), ``n_train`` and ``dim`` of each config's kept training set.

    One row per config, in order: a study's call job, so each optimum is computed once (with
    one torch thread, whatever the machine) and resumed with the study.
    """
    rows = []
    for config in configs:
        prepared = prepare(config)
        train = prepared.data.train
        f_star = exact_optimum(prepared.problem, train.X, train.y)
        rows.append((f_star, train.n, prepared.problem.dim))
    return pd.DataFrame(rows, columns=["f_star", "n_train", "dim"])


def loglog_slope(x: ArrayLike, y: ArrayLike) -> float:
    """The least-squares slope ``p`` of ``log y = p log x + c``: the exponent of ``y ~ x^p``.

    NaN with fewer than 2 distinct (positive) ``x``: no line is determined.
    """
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    if np.unique(lx).size < 2:
        return math.nan
    return float(np.polyfit(lx, ly, 1)[0])


def pooled_loglog_slope(groups: Sequence[tuple[ArrayLike, ArrayLike]]) -> float:
    """One slope of ``log y`` on ``log x`` shared by all ``(x, y)`` groups, each its own intercept.

    The within-group estimator: each group's logs centred on their means, the slope is
    ``sum(dx * dy) / sum(dx^2)`` over all points; groups of one point carry no slope and are
    dropped. NaN when no group has 2 points or every ``x`` equals its group mean.
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

    ``[3, 2, 2]``, ``[3, nan, nan]`` and ``[nan, nan]`` are non-increasing; ``[2, 3]`` and
    ``[3, nan, 1]`` are not.
    """
    ranked = _ranked(values)
    return bool((ranked[1:] <= ranked[:-1]).all())  # not np.diff: -inf - -inf is NaN


def decreased(values: ArrayLike) -> bool:
    """Whether the last value is strictly below the first, NaN ranking lowest.

    ``[3, nan]`` decreased; ``[nan, nan]`` and ``[3, 3]`` did not.
    """
    ranked = _ranked(values)
    return bool(ranked[-1] < ranked[0])


def seed_mean(values: ArrayLike) -> float:
    """The mean over seeds; NaN when any seed has no value (NaN).

    So a claim is never judged on the seeds that happened to reach a target or stay finite:
    pandas' ``mean`` would skip them silently.
    """
    return float(np.mean(np.asarray(values, dtype=float)))


# --- formatting facts and reading job keys ---------------------------------------------------


def listed(values: Sequence[object], sep: str = ", ") -> str:
    """Values as a note or a measurement lists them: floats as ``:g`` (NaN as ``none``), else text.

    ``listed((1, 0.5, math.nan))`` is ``"1, 0.5, none"``; ``listed((0, 1), ",")`` is ``"0,1"``.
    """
    return sep.join(
        ("none" if math.isnan(v) else f"{v:g}") if isinstance(v, float) else str(v) for v in values
    )


def key_numbers(key: Sequence[str]) -> dict[str, float]:
    """The numbers a job key names: ``("network", "mu0.9", "tau8")`` -> ``{"mu": 0.9, "tau": 8}``.

    A part is read as a name (letters) followed by a number; any other part (``"network"``,
    ``"topk-ef"``) is skipped. So a spec reads its grid back from the keys it made.
    """
    numbers = {}
    for part in key:
        name = next((part[:i] for i, char in enumerate(part) if not char.isalpha()), part)
        try:
            numbers[name] = float(part[len(name) :])
        except ValueError:
            continue
    return numbers
