"""Distributed mini-batch SGD (``sgd``): the baseline every paper compares against.

Each round every worker draws ``batch_size`` examples from its own shard (uniformly with
replacement, or by ``reshuffle``: a fresh order of its shard every epoch) and uploads the
mini-batch gradient at the model it received, compressed by ``compressor`` (with optional error
feedback; :mod:`lowcomm.algorithms.upload`); the aggregator combines the gradients
(:mod:`lowcomm.algorithms.combine`) and takes a heavy-ball (or Nesterov) step with step size lr_k
(:mod:`lowcomm.algorithms.server_step`),

    v_{k+1} = momentum * v_k + g_k,    x_{k+1} = x_k - lr_k * v_{k+1},

then broadcasts x_{k+1}. Messages: up, the compressor's payload per worker (identity: d values,
4d bytes in float32); down, d values. With ``asynchronous=True`` the aggregator applies each
gradient as it arrives (classic asynchronous SGD) and replies to its sender only. With
``order`` set (``d-rr``, ``so``, ``id-grab``, ``id-grab-mean``, ``cd-grab``, ``cd-grab-signs``)
batches follow epoch orders instead (:mod:`lowcomm.algorithms.ordered_sgd`), of single
examples or, with ``unit="minibatch"``, of fixed minibatches.

Objective. ``reduce="size-weighted"`` (the default; FedAvg's weights, McMahan et al., 2017,
Algorithm 1) combines by shard size, sum_m (n_m / N) g_m, an unbiased estimate of the gradient
of the reported objective F = (1/N) sum_i loss_i + (l2/2)||x||^2, which it minimises; ``mean``
weighs the workers equally and minimises (1/M) sum_m f_m^mean instead (another minimiser on
unequal shards), ``sum`` M times that. Asynchronously, the gradients that arrive together are
each scaled by their worker's share M n_m / N (:func:`lowcomm.data.dataset.shares`) and
averaged: unbiased for F's gradient when the sender is any worker alike (a lone arrival would
otherwise be applied at full weight whatever its shard).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from lowcomm.algorithms import upload
from lowcomm.algorithms.base import Context
from lowcomm.algorithms.combine import REDUCTIONS, combine
from lowcomm.algorithms.learning_rate import LEARNING_RATE
from lowcomm.algorithms.local_data import SAMPLING, LocalData
from lowcomm.algorithms.server_step import ServerStep
from lowcomm.algorithms.settings import (
    About,
    AlgorithmSettings,
    Flag,
    Interval,
    OneOf,
    OnlyWhen,
    When,
    is_asynchronous,
    setting,
)
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import shares
from lowcomm.ordering.orders import ORDERS, UNITS
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class SGDConfig(AlgorithmSettings):
    """Settings of ``sgd``: step size, per-worker batch, heavy-ball momentum, reduction."""

    ABOUT = About(
        "sgd",
        "distributed mini-batch SGD with heavy-ball momentum, or in epochs over example orders",
        up="a mini-batch gradient (d values; cd-grab: b per-example gradients)",
        down="the model (d values; cd-grab/-signs: the order at each epoch's end)",
        asynchronous=When("asynchronous", True),
        objective="F, the mean over all examples (reduce size-weighted); mean: workers alike",
        participation=(
            OnlyWhen("order", "none", "an example order steps every shard in lock-step"),
            OnlyWhen(
                "sampling",
                "replacement",
                "reshuffled batches are keyed by round: a worker sitting rounds out skips examples",
            ),
        ),
    )

    lr: float | str = setting(0.1, LEARNING_RATE, "step size: a number or a schedule")
    batch_size: int = setting(32, Interval(int, 1), "examples per worker per round")
    momentum: float = setting(0.0, Interval(float, 0.0, 1.0), "heavy-ball momentum")
    nesterov: bool = setting(False, Flag(), "Nesterov momentum instead of heavy-ball")
    reduce: Literal["sum", "mean", "size-weighted"] = setting(
        "size-weighted",
        OneOf(REDUCTIONS),
        "how gradients are combined: sum, mean or shard-size-weighted",
    )
    asynchronous: bool = setting(False, Flag(), "apply each gradient as it arrives")
    sampling: str = setting(
        "replacement", OneOf(SAMPLING), "uniform draws, or a fresh order of the shard every epoch"
    )
    order: str = setting(
        "none", OneOf(("none", *ORDERS)), "run in epochs over this example order (--order)"
    )
    projection: int = setting(
        0,
        Interval(int, 0),
        "cd-grab-signs: project pair differences to this many dimensions (0: none)",
    )
    unit: str = setting("example", OneOf(UNITS), "what an order permutes: examples or minibatches")
    compressor: str = upload.compressor_setting()
    error_feedback: bool = upload.error_feedback_setting()

    def __post_init__(self) -> None:
        """Check each setting, then the settings that depend on each other."""
        super().__post_init__()
        if self.order != "none" and self.asynchronous:
            raise InvalidConfigError("order", "sgd", "'none' for asynchronous sgd", self.order)
        if self.unit == "minibatch" and self.order == "none":
            allowed = "'example' without an order (minibatch units need an order)"
            raise InvalidConfigError("unit", "sgd", allowed, self.unit)
        if self.order != "none" and self.compressor != "identity":
            allowed = "'identity' with an example order (the order server needs the gradients)"
            raise InvalidConfigError("compressor", "sgd", allowed, self.compressor)
        if self.unit == "minibatch" and self.projection > 0:
            allowed = "0 with unit 'minibatch' (the server already holds the minibatch gradients)"
            raise InvalidConfigError("projection", "sgd", allowed, self.projection)


class SGDState(NamedTuple):
    """Aggregator state: the model, the heavy-ball buffer and all shard sizes."""

    params: torch.Tensor
    velocity: torch.Tensor
    sizes: torch.Tensor


class SGD:
    """Distributed mini-batch SGD with optional momentum; see the module docstring."""

    name = "sgd"

    def __init__(self, config: SGDConfig) -> None:
        self.config = config
        self.synchronous = not is_asynchronous(config)
        self.step = ServerStep(config.lr, config.momentum, config.nesterov)
        self._shares: tuple[torch.Tensor, torch.Tensor, bool] | None = None

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[SGDState, Download]:
        """Initial model from the problem's initialiser, broadcast to every worker."""
        params = problem.init_params(streams.generator("init"))
        state = SGDState(params, torch.zeros_like(params), sizes)
        return state, Download(Dense(params[None]), broadcast=True)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Any:
        """The workers' compressor state (nothing without error feedback or warm starts)."""
        return upload.init_memory(self.config, problem, workers)

    def local(
        self, state: Any, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Any]:
        """Upload the (compressed) mini-batch gradient at the received model."""
        assert isinstance(down, Dense)
        config = self.config
        index = data.draw(config.sampling, ctx.streams, ctx.round, config.batch_size)
        grad = data.grad(down.values, index)
        payload, state = upload.compress(config, data.problem, grad, state, ctx)
        return Upload.all(payload), state

    def aggregate(self, state: SGDState, up: Upload, ctx: Context) -> tuple[SGDState, Download]:
        """Combine the gradients and take one server step (plain, heavy-ball or Nesterov)."""
        grad = self._combine(state.sizes, up, ctx)
        params, velocity = self.step.apply(state.params, state.velocity, grad, ctx.round)
        return state._replace(params=params, velocity=velocity), Download(
            Dense(params[None]), broadcast=True
        )

    def _combine(self, sizes: torch.Tensor, up: Upload, ctx: Context) -> torch.Tensor:
        """The combined gradient (asynchronous size-weighted: the mean of the scaled rows)."""
        rows, reduce = upload.received(up.payload), self.config.reduce
        if reduce == "size-weighted" and not self.synchronous:
            scaled = self._scaled(rows, sizes, ctx.workers)
            return combine(scaled, up.sent, sizes, "mean")  # the mean ignores the sizes
        return combine(rows, up.sent, sizes[ctx.workers], reduce)

    def _scaled(
        self, rows: torch.Tensor, sizes: torch.Tensor, workers: torch.Tensor
    ) -> torch.Tensor:
        """``rows`` times their workers' :func:`shares` (of ``sizes``, in ``rows``' dtype).

        The shares are made once per sizes tensor (a run keeps the same one). Where every
        share is exactly 1 (equal shards) the product would change no bit: ``rows`` as they are.
        """
        cached = self._shares
        if cached is None or cached[0] is not sizes or not _alike(cached[1], rows):
            column = shares(sizes).to(rows)[:, None]
            self._shares = cached = (sizes, column, bool((column == 1).all()))
        return rows if cached[2] else rows * cached[1][workers]

    def model(self, state: SGDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: SGDState) -> dict[str, float]:  # noqa: D102
        return {}


def _alike(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` have the same dtype and device."""
    return a.dtype == b.dtype and a.device == b.device
