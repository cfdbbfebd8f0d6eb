"""Local SGD / FedAvg (``local-sgd``): L local mini-batch steps, then model averaging.

Each round every worker starts from the model x it received, takes ``local_steps`` SGD steps
x_w <- x_w - lr_k * g(x_w; batch) on its own shard (lr_k: the step size of round k, a number or
a schedule) and uploads its model change x_w - x, compressed by ``compressor``
(:mod:`lowcomm.algorithms.upload`); the aggregator adds the combined changes (by default the
size-weighted mean of FedAvg, McMahan et al., 2017, Algorithm 1: weights n_m / N; or the plain
mean) to x, which is the combined models, and broadcasts the result. Messages: the
compressor's payload up (identity: d values), d values down per worker per round. With
``local_steps = 1`` and the same batches this is exactly mini-batch ``sgd`` with the same
reduction and no momentum.

Objective: FedAvg's, the mean over all N examples, F = sum_m (n_m / N) f_m^mean, which the
size-weighted average follows to first order in the step (more local steps drift towards the
workers' own minimisers on heterogeneous shards: client drift, the method's own bias); ``mean``
weighs the workers alike, (1/M) sum_m f_m^mean, another minimiser on unequal shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from lowcomm.algorithms import upload
from lowcomm.algorithms.base import Context
from lowcomm.algorithms.combine import combine
from lowcomm.algorithms.learning_rate import LEARNING_RATE, step_size
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.settings import About, AlgorithmSettings, Interval, OneOf, setting
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
        objective="F, the mean over all examples, up to client drift (reduce size-weighted)",
        participation=True,
    )

    lr: float | str = setting(0.1, LEARNING_RATE, "local step size: a number or a schedule")
    batch_size: int = setting(32, Interval(int, 1), "examples per local step")
    local_steps: int = setting(4, Interval(int, 1), "local steps L per round")
    reduce: Literal["mean", "size-weighted"] = setting(
        "size-weighted",
        OneOf(("mean", "size-weighted")),
        "model averaging: mean or shard-size-weighted",
    )
    compressor: str = upload.compressor_setting()
    error_feedback: bool = upload.error_feedback_setting()


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

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Any:
        """The workers' compressor state (nothing without error feedback or warm starts)."""
        return upload.init_memory(self.config, problem, workers)

    def local(
        self, state: Any, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Any]:
        """Take L local SGD steps from the received model and upload the (compressed) change."""
        assert isinstance(down, Dense)
        params = down.values
        lr = step_size(self.config.lr, ctx.round)
        steps = self.config.local_steps
        for index in data.sample_steps(ctx.streams, ctx.round, self.config.batch_size, steps):
            params = params - lr * data.grad(params, index)
        change = params - down.values
        payload, state = upload.compress(self.config, data.problem, change, state, ctx)
        return Upload.all(payload), state

    def aggregate(
        self, state: LocalSGDState, up: Upload, ctx: Context
    ) -> tuple[LocalSGDState, Download]:
        """Add the combined model changes to the model."""
        sizes = state.sizes[ctx.workers]
        change = combine(upload.received(up.payload), up.sent, sizes, self.config.reduce)
        params = state.params + change
        return state._replace(params=params), Download(Dense(params[None]), broadcast=True)

    def model(self, state: LocalSGDState) -> torch.Tensor:  # noqa: D102
        return state.params

    def metrics(self, state: LocalSGDState) -> dict[str, float]:  # noqa: D102
        return {}
