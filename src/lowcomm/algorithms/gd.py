"""Full gradient descent with a distributed Armijo line search (``gd``).

One iteration takes two synchronous rounds:

1. the aggregator broadcasts x; every worker uploads its full local gradient and local loss
   (d + 1 values); the aggregator forms the global gradient g = sum_w (n_w / N) g_w and
   f(x) = sum_w (n_w / N) f_w(x), the global objective (1/N) sum_i loss_i + (l2/2)||x||^2;
2. the aggregator broadcasts g; every worker uploads its losses at the candidate points
   x - eta_j g (``count`` values); the aggregator takes the first eta_j with
   f(x - eta_j g) <= f(x) - c eta_j ||g||^2 (see :mod:`lowcomm.algorithms.line_search`).

A full local gradient costs the worker's shard size in gradient evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from lowcomm.algorithms.base import Context
from lowcomm.algorithms.combine import combine
from lowcomm.algorithms.line_search import (
    LINE_SEARCH_PART,
    SHRINK,
    SUFFICIENT_DECREASE,
    ArmijoGrid,
)
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.settings import POSITIVE, About, AlgorithmSettings, Interval, setting
from lowcomm.core.messages import AnyPayload, Bundle, Dense, Download, Scalars, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class GDConfig(AlgorithmSettings):
    """Settings of ``gd``: the line search's candidates step0 * shrink^j and constant c."""

    ABOUT = About(
        "gd",
        "full gradient descent with a distributed Armijo line search (2 rounds per iteration)",
        up="the local gradient and loss (d + 1 values), then the trial losses",
        down="the model, then the global gradient (d values)",
        objective="F, the mean over all examples: gradient and loss weighted by shard size",
        participation="its gradient and line-search rounds must hear the same workers",
    )

    step0: float = setting(1.0, POSITIVE, "largest trial step", part=LINE_SEARCH_PART)
    shrink: float = setting(0.5, SHRINK, "ratio between trial steps", part=LINE_SEARCH_PART)
    candidates: int = setting(20, Interval(int, 1), "number of trial steps", part=LINE_SEARCH_PART)
    armijo: float = setting(
        1e-4, SUFFICIENT_DECREASE, "sufficient-decrease constant c", part=LINE_SEARCH_PART
    )

    @property
    def line_search(self) -> ArmijoGrid:
        """The grid of candidate steps."""
        return ArmijoGrid(self.step0, self.shrink, self.candidates, self.armijo)


class GDWorkerState(NamedTuple):
    """Each worker keeps the model it last received, to evaluate the trial points."""

    params: torch.Tensor


class GDState(NamedTuple):
    """Aggregator state: model, global gradient and loss at it, last step, phase, sizes."""

    params: torch.Tensor
    grad: torch.Tensor
    loss: torch.Tensor
    step: torch.Tensor
    phase: torch.Tensor
    sizes: torch.Tensor


class GD:
    """Gradient descent with a distributed Armijo line search; see the module docstring."""

    name = "gd"
    synchronous = True

    def __init__(self, config: GDConfig) -> None:
        self.config = config

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[GDState, Download]:
        """Initial model, broadcast to every worker (phase 0: gradient round)."""
        params = problem.init_params(streams.generator("init"))
        zero = params.new_zeros(())
        phase = torch.tensor(0, device=params.device)
        state = GDState(params, torch.zeros_like(params), zero, zero, phase, sizes)
        return state, Download(Dense(params[None]), broadcast=True)

    def init_workers(
        self, problem: Problem, workers: torch.Tensor, streams: Streams
    ) -> GDWorkerState:
        """No model received yet."""
        shape = (workers.shape[0], problem.dim)
        return GDWorkerState(torch.zeros(shape, dtype=problem.dtype, device=problem.device))

    def local(
        self, state: GDWorkerState, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, GDWorkerState]:
        """Phase 0 (even rounds): gradient and loss; phase 1: losses at the trial points."""
        assert isinstance(down, Dense)
        if ctx.round % 2 == 0:
            params = down.values
            up = Bundle((Dense(data.grad(params)), Scalars(data.loss(params)[:, None])))
            return Upload.all(up), GDWorkerState(params)
        steps = self.config.line_search.steps(state.params.dtype, state.params.device)
        trials = [data.loss(state.params - eta * down.values) for eta in steps]
        return Upload.all(Scalars(torch.stack(trials, dim=1))), state

    def aggregate(self, state: GDState, up: Upload, ctx: Context) -> tuple[GDState, Download]:
        """Phase 0: form g and f(x), send g; phase 1: choose the step, move, send x."""
        sizes, device = state.sizes[ctx.workers], state.params.device
        if int(state.phase) == 0:
            assert isinstance(up.payload, Bundle)
            grad_part, loss_part = up.payload.parts
            assert isinstance(grad_part, Dense) and isinstance(loss_part, Scalars)
            grad = combine(grad_part.values, up.sent, sizes, "size-weighted")
            loss = combine(loss_part.values, up.sent, sizes, "size-weighted")[0]
            new = state._replace(grad=grad, loss=loss, phase=torch.tensor(1, device=device))
            return new, Download(Dense(grad[None]), broadcast=True)
        assert isinstance(up.payload, Scalars)
        values = combine(up.payload.values, up.sent, sizes, "size-weighted")
        grid = self.config.line_search
        index = grid.choose(state.loss, values, state.grad.dot(state.grad))
        step = grid.steps(state.params.dtype, device)[index]
        params = state.params - step * state.grad
        new = state._replace(params=params, step=step, phase=torch.tensor(0, device=device))
        return new, Download(Dense(params[None]), broadcast=True)

    def model(self, state: GDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: GDState) -> dict[str, float]:  # noqa: D102
        return {"step_size": float(state.step)}
