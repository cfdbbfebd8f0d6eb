"""Asynchronous momentum SGD (``async-msgd``): heavy-ball at the aggregator on stale gradients.

Liu, Li, Shi, Zhou and Zhao, NeurIPS 2018 (arXiv 1806.01660): the aggregator holds the current
and the previous iterate and applies momentum to fresh iterates with gradients that workers
computed at stale models,

    v_{k+1} = v_k + mu (v_k - v_{k-1}) - eta g(v_{k - tau_k}; xi_k)

(on streaming PCA, g is the negated Oja direction, :mod:`lowcomm.problems.pca`). Staleness comes
from one of two places (the paper body was not available; the delay model is a reconstruction,
../shared/papers/hogwild-increasing-batch-and-async-msgd.md, B.2):

* ``delay="engine"`` (default): the event-driven engine's real staleness (workers with speeds;
  each upload is one update; uploads arriving together are one update with their mean);
* a delay model for controlled studies, run in synchronous rounds: ``const:T`` (tau = T),
  ``uniform:T`` (tau uniform in 0..T), ``geometric:P`` (P(tau = j) = (1 - P)^j P, cut at its
  99.9% quantile); each worker of a round gets the iterate v_{k - tau} (v_0 while k < tau) and
  the aggregator applies the mean of their gradients. tau = 0 is synchronous momentum SGD.

``normalize=True`` divides the iterate by its norm after every update (a numerically safer Oja
variant; off by default, as in the paper). The recursion stays in this iterate form (not the
shared :mod:`lowcomm.algorithms.server_step`), because ``normalize`` rescales the iterates it
differences; eta may follow a schedule (eta_k at update k). The ``staleness`` history column is
the mean staleness of the last update. Messages: d values down; up, the gradient compressed by
``compressor`` (:mod:`lowcomm.algorithms.upload`; identity: d values) per worker per update.

Objective (the paper's: one data distribution, its streaming samples). A worker's gradient is
that of its share of the total, f_m = (M n_m / N) f_m^mean (:mod:`lowcomm.algorithms.objective`):
the mean over workers of these gradients is the global gradient of the reported objective, so
a synchronous update (a delay model) applies it in expectation over the mini-batches, and an
asynchronous one, from a worker drawn uniformly, in expectation over the worker too. On equal
shards the scale is exactly 1. (Workers that arrive more often still count more: the engine's
speeds weigh the objective, as in any asynchronous SGD.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from lowcomm.algorithms import upload
from lowcomm.algorithms.base import Context
from lowcomm.algorithms.learning_rate import LEARNING_RATE, step_size
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.objective import WorkerObjective
from lowcomm.algorithms.settings import (
    About,
    AlgorithmSettings,
    Flag,
    Interval,
    Text,
    When,
    is_asynchronous,
    setting,
)
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem

DELAYS = "engine, const:T, uniform:T (T >= 0 integer) or geometric:P (0 < P <= 1)"


@dataclass(frozen=True)
class DelayModel:
    """Staleness drawn per (worker, round) from a stated distribution."""

    text: str

    def __post_init__(self) -> None:
        kind, _, arg = self.text.partition(":")
        try:
            value = float(arg)
        except ValueError:
            raise InvalidConfigError("delay", "async-msgd", DELAYS, self.text) from None
        integer = kind in ("const", "uniform") and value >= 0 and value.is_integer()
        if not (integer or (kind == "geometric" and 0 < value <= 1)):
            raise InvalidConfigError("delay", "async-msgd", DELAYS, self.text)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "value", value)

    @property
    def longest(self) -> int:
        """The largest staleness it can draw."""
        if self.kind == "geometric":  # type: ignore[attr-defined]
            p = self.value  # type: ignore[attr-defined]
            return 0 if p == 1 else math.ceil(math.log(1e-3) / math.log(1 - p))
        return int(self.value)  # type: ignore[attr-defined]

    def draw(self, streams: Streams, workers: torch.Tensor, round_: int) -> torch.Tensor:
        """One staleness per worker for this round."""
        u = streams.uniform("delay", workers, round_, 1)[:, 0]
        kind, value = self.kind, self.value  # type: ignore[attr-defined]
        if kind == "const":
            tau = torch.full_like(u, value)
        elif kind == "uniform":
            tau = torch.floor(u * (value + 1))
        else:
            tau = (
                torch.zeros_like(u)
                if value == 1
                else torch.floor(torch.log1p(-u) / math.log1p(-value))
            )
        return tau.clamp(max=self.longest).to(torch.int64)


def _delay(text: str) -> None:
    """Refuse (ValueError) a ``delay`` that is neither ``engine`` nor a delay model."""
    if text != "engine":
        DelayModel(text)


@dataclass(frozen=True)
class AsyncMSGDConfig(AlgorithmSettings):
    """Settings of ``async-msgd``; see the module docstring."""

    ABOUT = About(
        "async-msgd",
        "asynchronous momentum SGD: heavy-ball at the aggregator on stale gradients",
        up="a mini-batch gradient (d values)",
        down="the current iterate (d values)",
        asynchronous=When("delay", "engine"),
        objective="F, the mean over all examples: worker m's gradient scaled by M n_m / N",
        participation=True,
    )

    lr: float | str = setting(0.005, LEARNING_RATE, "step size: a number or a schedule")
    momentum: float = setting(0.0, Interval(float, 0.0, 1.0), "heavy-ball momentum")
    batch_size: int = setting(1, Interval(int, 1), "examples per gradient")
    delay: str = setting(
        "engine", Text(DELAYS, _delay), "staleness: the engine's, or a delay model (sync rounds)"
    )
    normalize: bool = setting(False, Flag(), "divide the iterate by its norm after every update")
    compressor: str = upload.compressor_setting()
    error_feedback: bool = upload.error_feedback_setting()


class AsyncMSGDState(NamedTuple):
    """The current and previous iterates, past iterates (newest first), last staleness."""

    params: torch.Tensor
    previous: torch.Tensor
    past: torch.Tensor
    staleness: torch.Tensor


class AsyncMSGD:
    """Heavy-ball momentum at the aggregator on stale gradients; see the module docstring."""

    name = "async-msgd"

    def __init__(self, config: AsyncMSGDConfig) -> None:
        self.config = config
        self.delays = None if config.delay == "engine" else DelayModel(config.delay)
        self.synchronous = not is_asynchronous(config)

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[AsyncMSGDState, Download]:
        """v_0 = v_{-1}; every worker starts from v_0."""
        params = problem.init_params(streams.generator("init"))
        depth = 1 if self.delays is None else self.delays.longest + 1
        state = AsyncMSGDState(
            params, params, params.expand(depth, -1).clone(), params.new_zeros(())
        )
        return state, self._download(state, sizes.shape[0], streams, 0)

    def _download(
        self, state: AsyncMSGDState, workers: int, streams: Streams, round_: int
    ) -> Download:
        if self.delays is None:
            return Download(Dense(state.params[None]), broadcast=True)
        tau = self.delays.draw(streams, torch.arange(workers, device=state.params.device), round_)
        return Download(Dense(state.past[tau]), broadcast=False)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Any:
        """The workers' compressor state (nothing without error feedback or warm starts)."""
        return upload.init_memory(self.config, problem, workers)

    def local(
        self, state: Any, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Any]:
        """The (compressed) stochastic gradient of f_m at the (stale) iterate received."""
        assert isinstance(down, Dense)
        index = data.sample(ctx.streams, ctx.round, self.config.batch_size)
        grad = WorkerObjective(data).grad(down.values, index)
        payload, state = upload.compress(self.config, data.problem, grad, state, ctx)
        return Upload.all(payload), state

    def aggregate(
        self, state: AsyncMSGDState, up: Upload, ctx: Context
    ) -> tuple[AsyncMSGDState, Download]:
        """v_{k+1} = v_k + mu (v_k - v_{k-1}) - eta * mean of the received gradients."""
        rows = upload.received(up.payload)
        sent = up.sent.to(rows.dtype)
        grad = (rows * sent[:, None]).sum(dim=0) / sent.sum().clamp_min(1)
        config, lr = self.config, step_size(self.config.lr, ctx.round)
        params = state.params + config.momentum * (state.params - state.previous) - lr * grad
        if config.normalize:
            params = params / params.norm()
        past = torch.cat([params[None], state.past[:-1]])
        staleness = self._staleness(ctx)
        new = AsyncMSGDState(params, state.params, past, staleness)
        return new, self._download(new, ctx.n_workers, ctx.streams, ctx.round + 1)

    def _staleness(self, ctx: Context) -> torch.Tensor:
        """Mean staleness of this update's gradients (the delay model's draw or the engine's)."""
        if self.delays is None:
            assert ctx.staleness is not None
            return ctx.staleness.to(torch.float64).mean()
        tau = self.delays.draw(ctx.streams, ctx.workers, ctx.round).clamp(max=ctx.round)
        return tau.to(torch.float64).mean()

    def model(self, state: AsyncMSGDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: AsyncMSGDState) -> dict[str, float]:
        """Mean staleness of the last update."""
        return {"staleness": float(state.staleness)}
