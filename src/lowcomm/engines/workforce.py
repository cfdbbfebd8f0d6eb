"""Where an asynchronous run's workers compute, and what one computation returns.

The schedule (:mod:`lowcomm.engines.asynchrony`) starts computations and collects them through a
:class:`Workforce`: in this process (:mod:`lowcomm.engines.simulate`) or on worker ranks
(:mod:`lowcomm.engines.remote_async`). Either way one worker's computation is
:func:`compute_one`, which updates that worker's row of the hosted state in place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from lowcomm.algorithms.base import Algorithm, Context
from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import tree
from lowcomm.core.messages import AnyPayload, Upload
from lowcomm.engines.session import RunState


@dataclass(frozen=True)
class Completed:
    """A worker's finished computation: its upload and the oracle calls it made."""

    worker: int
    upload: Upload
    grad_evals: int
    hvps: int


def compute_one(
    algorithm: Algorithm,
    workers: Any,
    position: int,
    down: AnyPayload,
    data: LocalData,
    ctx: Context,
) -> Completed:
    """The computation of the one worker ``ctx.workers`` at its local round ``ctx.round``.

    ``workers`` is the state of the workers hosted here, this worker's row ``position`` updated
    in place (so a computation costs its own row, not a copy of every hosted worker's state);
    ``down`` and ``data`` hold its row alone.
    """
    index = positions(position, position + 1, data.sizes.device)
    up, mine = algorithm.local(tree.take(workers, index), down, data, ctx)
    grads, hvps = data.take_counts()
    tree.write(workers, index, mine)
    return Completed(int(ctx.workers), up, grads, hvps)


@functools.lru_cache(maxsize=4096)
def positions(start: int, stop: int, device: torch.device) -> torch.Tensor:
    """The index tensor ``[start, ..., stop - 1]``, made once (it only ever indexes)."""
    return torch.arange(start, stop, device=device)


class Workforce(Protocol):
    """Where asynchronous workers compute."""

    def submit(
        self, state: RunState, workers: Sequence[int], local_rounds: Sequence[int], down: AnyPayload
    ) -> None:
        """Start each worker's computation number ``local_rounds[i]`` on row i of ``down``."""
        ...

    def collect(self, workers: Sequence[int]) -> list[Completed]:
        """The computations of ``workers`` (waiting for them) and any others already finished."""
        ...

    def next_arrival(self) -> Completed:
        """Wait for the next computation to finish in real time."""
        ...
