"""The algorithm seam, shared by every algorithm and every engine.

An algorithm is explicit state plus functions (optax-style): ``init`` makes the aggregator
state and the first download, ``init_workers`` the state of a group of workers (leading worker
axis), ``local`` turns a group's state, the rows of the last download it received and its data
into an :class:`~lowcomm.core.messages.Upload`, and ``aggregate`` turns the aggregator state and
the uploads of a round into a new state and the next :class:`~lowcomm.core.messages.Download`.
Synchronous algorithms see every worker in each call; asynchronous ones see one worker, with its
staleness in the context. Algorithms never know which engine runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from lowcomm.algorithms.local_data import LocalData
from lowcomm.core.messages import AnyPayload, Download, Upload
from lowcomm.core.rng import Streams
from lowcomm.problems.base import Problem


@dataclass(frozen=True)
class Context:
    """What a step function may know about where it is.

    ``round`` is the aggregator's update count for ``aggregate`` and the worker's own round
    count for ``local`` (so random draws are keyed by the worker's progress, whatever the event
    order); ``workers`` are the global ids of the rows in this call; ``staleness[w]`` counts the
    aggregator updates since the model a worker used was sent (asynchronous runs only).
    """

    round: int
    workers: torch.Tensor
    n_workers: int
    streams: Streams
    staleness: torch.Tensor | None = None


class Algorithm(Protocol):
    """Explicit state plus step functions; see the module docstring."""

    name: str
    synchronous: bool

    def init(self, problem: Problem, sizes: torch.Tensor, streams: Streams) -> tuple[Any, Download]:
        """Aggregator state and the first download; ``sizes[w]`` are all shard sizes."""
        ...

    def init_workers(self, problem: Problem, workers: torch.Tensor, streams: Streams) -> Any:
        """State of the workers ``workers`` (a NamedTuple of tensors with a worker axis)."""
        ...

    def local(
        self, state: Any, down: AnyPayload, data: LocalData, ctx: Context
    ) -> tuple[Upload, Any]:
        """One round of the workers in ``ctx.workers``, from the download rows they received."""
        ...

    def aggregate(self, state: Any, up: Upload, ctx: Context) -> tuple[Any, Download]:
        """Combine the uploads of ``ctx.workers``; return the new state and the next download."""
        ...

    def model(self, state: Any) -> torch.Tensor:
        """The aggregator's current model ``[d]``, which the engine evaluates."""
        ...

    def metrics(self, state: Any) -> dict[str, float]:
        """Algorithm-specific history columns (skip ratio, current L, step size)."""
        ...


class NoState(NamedTuple):
    """The state of workers that keep nothing between rounds."""
