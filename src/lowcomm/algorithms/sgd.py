"""Distributed mini-batch SGD (``sgd``): the baseline every paper compares against.

Each round every worker draws ``batch_size`` examples from its own shard (uniformly with
replacement, or by ``reshuffle``: a fresh order of its shard every epoch) and uploads the
mini-batch gradient at the model it received; the aggregator combines the gradients (sum, mean
or size-weighted mean) and takes a heavy-ball step,

    v_{k+1} = momentum * v_k + g_k,    x_{k+1} = x_k - lr * v_{k+1},

then broadcasts x_{k+1}. Messages: up, d values per worker (4d bytes in float32); down, the
same. With ``asynchronous=True`` the aggregator applies each gradient as it arrives (classic
asynchronous SGD) and replies to its sender only. With ``order`` set (``d-rr``, ``so``,
``id-grab``, ``id-grab-mean``, ``cd-grab``, ``cd-grab-signs``) batches follow epoch orders
instead (:mod:`lowcomm.algorithms.ordered_sgd`), of single examples or, with
``unit="minibatch"``, of fixed minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from lowcomm.algorithms.base import Context, NoState
from lowcomm.algorithms.combine import Reduce, check_reduce, combine
from lowcomm.algorithms.local_data import SAMPLING, LocalData
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.core.validate import at_least, in_interval, one_of, positive
from lowcomm.ordering.orders import ORDERS, UNITS
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class SGDConfig:
    """Settings of ``sgd``: step size, per-worker batch, heavy-ball momentum, reduction."""

    lr: float = 0.1
    batch_size: int = 32
    momentum: float = 0.0
    reduce: Reduce = "mean"
    asynchronous: bool = False
    sampling: str = "replacement"
    order: str = "none"
    projection: int = 0
    unit: str = "example"

    def __post_init__(self) -> None:
        positive("sgd", "lr", self.lr)
        at_least("sgd", "batch_size", self.batch_size, 1)
        in_interval("sgd", "momentum", self.momentum, 0.0, 1.0)
        check_reduce("sgd", self.reduce)
        one_of("sgd", "sampling", self.sampling, SAMPLING)
        one_of("sgd", "order", self.order, ("none", *ORDERS))
        at_least("sgd", "projection", self.projection, 0)
        one_of("sgd", "unit", self.unit, UNITS)
        if self.order != "none" and self.asynchronous:
            raise InvalidConfigError("order", "sgd", "'none' for asynchronous sgd", self.order)
        if self.unit == "minibatch" and self.order == "none":
            allowed = "'example' without an order (minibatch units need an order)"
            raise InvalidConfigError("unit", "sgd", allowed, self.unit)
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
        self.synchronous = not config.asynchronous

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[SGDState, Download]:
        """Initial model from the problem's initialiser, broadcast to every worker."""
        params = problem.init_params(streams.generator("init"))
        state = SGDState(params, torch.zeros_like(params), sizes)
        return state, Download(Dense(params[None]), broadcast=True)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> NoState:
        """Workers keep nothing between rounds."""
        return NoState()

    def local(
        self, state: NoState, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, NoState]:
        """Upload the mini-batch gradient at the received model."""
        assert isinstance(down, Dense)
        config = self.config
        index = data.draw(config.sampling, ctx.streams, ctx.round, config.batch_size)
        return Upload.all(Dense(data.grad(down.values, index))), state

    def aggregate(self, state: SGDState, up: Upload, ctx: Context) -> tuple[SGDState, Download]:
        """Combine the gradients and take one heavy-ball step."""
        assert isinstance(up.payload, Dense)
        sizes = state.sizes[ctx.workers]
        grad = combine(up.payload.values, up.sent, sizes, self.config.reduce)
        velocity = self.config.momentum * state.velocity + grad
        params = state.params - self.config.lr * velocity
        return state._replace(params=params, velocity=velocity), Download(
            Dense(params[None]), broadcast=True
        )

    def model(self, state: SGDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: SGDState) -> dict[str, float]:  # noqa: D102
        return {}
