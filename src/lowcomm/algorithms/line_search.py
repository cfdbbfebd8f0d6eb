"""Armijo backtracking over a fixed grid of candidate steps, evaluated in one round.

Distributed line searches cannot afford one round per trial step, so every candidate
eta_j = step0 * shrink^j (j = 0..count-1) is evaluated at once and the first that satisfies the
Armijo condition f(x - eta_j p) <= f(x) - c * eta_j * <g, p> is taken (GIANT, Wang et al. 2018,
does the same with eta_j = 4^-j and c = 0.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowcomm.core.constraints import Interval

LINE_SEARCH_PART = (
    "line search"  # the part of an algorithm its line-search settings configure, in errors
)
SHRINK = Interval(float, 1e-12, 1.0)
SUFFICIENT_DECREASE = Interval(float, 1e-12, 0.5, closed="both")


@dataclass(frozen=True)
class ArmijoGrid:
    """Candidate steps step0 * shrink^j, j < count, and the sufficient-decrease constant c.

    The configs that build one declare the allowed values (:data:`SHRINK`,
    :data:`SUFFICIENT_DECREASE`).
    """

    step0: float = 1.0
    shrink: float = 0.5
    count: int = 20
    c: float = 1e-4

    def steps(
        self, dtype: torch.dtype = torch.float64, device: torch.device | None = None
    ) -> torch.Tensor:
        """The candidate steps, largest first (on ``device``; None: the default device)."""
        return self.step0 * self.shrink ** torch.arange(self.count, dtype=dtype, device=device)

    def choose(self, f0: torch.Tensor, values: torch.Tensor, slope: torch.Tensor) -> int:
        """Index of the first candidate with sufficient decrease.

        ``values[j]`` = f(x - eta_j p) and ``slope`` = <g, p>. If none qualifies, the candidate
        with the lowest value is returned, so a run never stalls on a failed search.
        """
        steps = self.steps(values.dtype, values.device)
        ok = values <= f0 - self.c * steps * slope
        if bool(ok.any()):
            return int(torch.nonzero(ok)[0, 0])
        return int(torch.argmin(values))

    def choose_each(
        self, f0: torch.Tensor, values: torch.Tensor, slope: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`choose` for every row: ``f0[w]``, ``values[w, count]``, ``slope[w]``."""
        steps = self.steps(values.dtype, values.device)
        ok = values <= f0[:, None] - self.c * steps[None, :] * slope[:, None]
        first = torch.argmax(ok.to(torch.int64), dim=1)
        return torch.where(ok.any(dim=1), first, torch.argmin(values, dim=1))

    def trial_values(
        self, loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, p: torch.Tensor
    ) -> torch.Tensor:
        """``loss(x - eta_j p)`` for every candidate, ``[w, count]`` (``x``, ``p``: ``[w, d]``)."""
        return torch.stack([loss(x - eta * p) for eta in self.steps(x.dtype, x.device)], dim=1)

    def backtrack_each(
        self,
        loss: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        p: torch.Tensor,
        f0: torch.Tensor,
        slope: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`choose_each` of :meth:`trial_values`, evaluating candidates only as needed.

        A local line search (no round per trial): the candidates are tried in order, for all
        rows at once, and the search stops as soon as every row has a candidate with
        sufficient decrease. The index is the one :meth:`choose_each` picks from all values
        (the same comparisons, so bit for bit); a row with no such candidate evaluates all of
        them and takes the lowest.
        """
        steps = self.steps(x.dtype, x.device)
        values, found = [], torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        first = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for j, eta in enumerate(steps):
            values.append(loss(x - eta * p))
            ok = values[-1] <= f0 - self.c * steps[j] * slope
            first = torch.where(ok & ~found, j, first)
            found = found | ok
            if bool(found.all()):
                return first
        return torch.where(found, first, torch.argmin(torch.stack(values, dim=1), dim=1))
