"""Local SGD / FedAvg (``local-sgd``): L local mini-batch steps, then model averaging.

Each round every worker starts from the model it received, takes ``local_steps`` SGD steps
x <- x - lr * g(x; batch) on its own shard and uploads its model; the aggregator combines the
models (mean, or size-weighted mean as in FedAvg; McMahan et al., 2017) and broadcasts the
result. Messages: d values up and down per worker per round. With ``local_steps = 1`` and the
same batches this is exactly mini-batch ``sgd`` with the same reduction and no momentum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from lowcomm.algorithms.base import Context, NoState
from lowcomm.algorithms.combine import combine
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.settings import POSITIVE, About, AlgorithmSettings, Interval, OneOf, setting
from lowcomm.core.messages import AnyPayload, Dense, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class LocalSGDConfig(AlgorithmSettings):
    """Settings of ``local-sgd``: step size, batch, local steps L and the averaging weights."""

    ABOUT = About(
        "local-sgd",
        "local SGD / FedAvg: L local mini-batch steps per worker, then model averaging",
        up="the worker's model (d values)",
        down="the averaged model (d values)",
    )

    lr: float = setting(0.1, POSITIVE, "local step size")
    batch_size: int = setting(32, Interval(int, 1), "examples per local step")
    local_steps: int = setting(4, Interval(int, 1), "local steps L per round")
    reduce: Literal["mean", "size-weighted"] = setting(
        "mean", OneOf(("mean", "size-weighted")), "model averaging: mean or shard-size-weighted"
    )


class LocalSGDState(NamedTuple):
    """Aggregator state: the averaged model and all shard sizes."""

    params: torch.Tensor
    sizes: torch.Tensor


class LocalSGD:
    """Local SGD with periodic model averaging; see the module docstring."""

    name = "local-sgd"
    synchronous = True

    def __init__(self, config: LocalSGDConfig) -> None:
        self.config = config

    def init(
        self, problem: Problem, sizes: torch.Tensor, streams: Streams
    ) -> tuple[LocalSGDState, Download]:
        """Initial model, broadcast to every worker."""
        params = problem.init_params(streams.generator("init"))
        return LocalSGDState(params, sizes), Download(Dense(params[None]), broadcast=True)

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> NoState:
        """Workers keep nothing between rounds."""
        return NoState()

    def local(
        self, state: NoState, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, NoState]:
        """Take L local SGD steps from the received model and upload the result."""
        assert isinstance(down, Dense)
        params = down.values
        for step in range(self.config.local_steps):
            index = data.sample(ctx.streams, ctx.round, self.config.batch_size, step)
            params = params - self.config.lr * data.grad(params, index)
        return Upload.all(Dense(params)), state

    def aggregate(
        self, state: LocalSGDState, up: Upload, ctx: Context
    ) -> tuple[LocalSGDState, Download]:
        """Average the uploaded models."""
        assert isinstance(up.payload, Dense)
        sizes = state.sizes[ctx.workers]
        params = combine(up.payload.values, up.sent, sizes, self.config.reduce)
        return state._replace(params=params), Download(Dense(params[None]), broadcast=True)

    def model(self, state: LocalSGDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: LocalSGDState) -> dict[str, float]:  # noqa: D102
        return {}
