"""A group of workers' access to their own shards, counting every oracle call exactly.

Algorithms reach their data only through :class:`LocalData`, so the gradient evaluations and
Hessian-vector products in the ledger are counted where they happen: a mini-batch gradient of
b examples costs b gradient evaluations per worker, a full local gradient costs the worker's
shard size, a Hessian-vector product costs one HVP and an explicit d x d Hessian costs d HVPs.
Loss values (for line searches and monitoring) are not counted. Sequential single-example
steps gather their examples once and are charged then (:meth:`LocalData.visits`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch

from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards
from lowcomm.problems.base import ExampleGradients, Problem

SAMPLING = ("replacement", "reshuffle")
BATCH_STREAM = "batch"
"""The keyed stream of mini-batch positions drawn with replacement."""


class Visits(NamedTuple):
    """The examples of s sequential single-example steps, gathered before the first step.

    ``examples[j]`` is step j's ``(X[w, 1, ...], y[w, 1])``; ``ones`` the unit weight ``[w, 1]``
    of one example; ``example_grad`` the problem's fast gradient of one dense example (None if
    it has none, or the features are sparse). See :meth:`LocalData.visits`.
    """

    examples: list[tuple[torch.Tensor, torch.Tensor]]
    ones: torch.Tensor
    example_grad: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None


class LocalData:
    """The shards of the workers in one call, seen through the problem."""

    def __init__(
        self,
        problem: Problem,
        shards: Shards,
        counters: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """``counters``: the gradient-evaluation and HVP counters to count into (fresh if None)."""
        self.problem = problem
        self.shards = shards
        if counters is None:
            zeros = torch.zeros(shards.rows, dtype=torch.int64, device=shards.sizes.device)
            counters = (zeros, zeros.clone())
        self.grad_evals, self.hvps = counters

    @property
    def sizes(self) -> torch.Tensor:
        """Shard size of each worker, int64 [w]."""
        return self.shards.sizes

    def take(self, index: torch.Tensor) -> LocalData:
        """The data of the workers at positions ``index`` (fresh counters)."""
        return LocalData(self.problem, self.shards.take(index))

    def reset_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the gradient-evaluation and HVP counts so far and start again from zero."""
        counts = (self.grad_evals, self.hvps)
        self.grad_evals = torch.zeros_like(counts[0])
        self.hvps = torch.zeros_like(counts[1])
        return counts

    def take_counts(self) -> tuple[int, int]:
        """One worker's gradient-evaluation and HVP counts so far, zeroed in place after.

        :meth:`reset_counts` for data of one worker whose counts are read at once (an
        asynchronous computation): no new counters.
        """
        grads, hvps = int(self.grad_evals), int(self.hvps)
        if grads:
            self.grad_evals.zero_()
        if hvps:
            self.hvps.zero_()
        return grads, hvps

    def sample(
        self,
        streams: Streams,
        round_: int,
        batch_size: int,
        step: int = 0,
        stream: str = BATCH_STREAM,
    ) -> torch.Tensor:
        """Positions ``[w, batch_size]`` drawn uniformly with replacement from each shard.

        Keyed by (worker, round, step), so a worker's draws do not depend on the engine.
        """
        return streams.integers(stream, self.shards.workers, round_, batch_size, self.sizes, step)

    def sample_steps(
        self, streams: Streams, round_: int, batch_size: int, steps: int
    ) -> torch.Tensor:
        """:meth:`sample` of steps 0, ..., ``steps - 1`` in one keyed call, ``[steps, w, b]``."""
        workers, every = self.shards.workers, range(steps)
        return streams.integers_steps(BATCH_STREAM, workers, round_, batch_size, self.sizes, every)

    def reshuffled(
        self, streams: Streams, counter: int, batch_size: int, stream: str = "epoch"
    ) -> torch.Tensor:
        """Positions ``[w, batch_size]`` of each worker's ``counter``-th batch under reshuffling.

        Every worker passes over its shard in a fresh uniform order each epoch (its own order,
        keyed by (worker, epoch)); a batch that runs past the end of an epoch continues in the
        next epoch's order. This is how the SASG authors' notebooks draw batches.
        """
        positions = counter * batch_size + torch.arange(batch_size, device=self.sizes.device)
        sizes = self.sizes[:, None]
        epochs, offsets = positions[None, :] // sizes, positions[None, :] % sizes
        first = epochs[:, 0]
        out = torch.empty_like(offsets)
        width = self.shards.X.shape[1]
        for extra in range(int((epochs[:, -1] - first).max()) + 1):
            order = streams.permutations(
                stream, self.shards.workers, first + extra, self.sizes, width
            )
            mine = epochs == (first + extra)[:, None]
            out[mine] = torch.gather(order, 1, offsets)[mine]
        return out

    def draw(self, sampling: str, streams: Streams, counter: int, batch_size: int) -> torch.Tensor:
        """The ``counter``-th batch: ``replacement`` (:meth:`sample`) or ``reshuffle``."""
        if sampling == "reshuffle":
            return self.reshuffled(streams, counter, batch_size)
        return self.sample(streams, counter, batch_size)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        X, y = self.shards.gather(index)
        weight = self.shards.weight
        return X, y, _ones(tuple(index.shape), weight.dtype, weight.device)

    def loss(self, params: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Local objective ``[w]`` on the batch ``index`` or, if None, on the whole shard."""
        if index is None:
            return self.problem.loss(params, self.shards.X, self.shards.y, self.shards.weight)
        return self.problem.loss(params, *self._batch(index))

    def grad(self, params: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient ``[w, d]`` on the batch ``index`` or, if None, on the whole shard."""
        if index is None:
            self.grad_evals += self.sizes
            return self.problem.grad(params, self.shards.X, self.shards.y, self.shards.weight)
        self.grad_evals += index.shape[1]
        return self.problem.grad(params, *self._batch(index))

    def visits(self, index: torch.Tensor) -> Visits:
        """The examples at ``index[w, s]`` for s single-example steps (:meth:`grad_at`).

        Dense features are gathered in one call and split into the steps' views. The s
        gradient evaluations of the steps are charged here, once, not step by step.
        """
        self.grad_evals += index.shape[1]
        weight, problem = self.shards.weight, self.problem
        ones = torch.ones(index.shape[0], 1, dtype=weight.dtype, device=weight.device)
        columns = index.split(1, dim=1)
        if self.shards.X.is_sparse:
            return Visits([self.shards.gather(c) for c in columns], ones, None)
        X, y = self.shards.gather(index)
        fast = problem.example_grad if isinstance(problem, ExampleGradients) else None
        return Visits(list(zip(X.split(1, dim=1), y.split(1, dim=1), strict=True)), ones, fast)

    def grad_at(self, params: torch.Tensor, visits: Visits, step: int) -> torch.Tensor:
        """Gradient ``[w, d]`` on each worker's example of step ``step`` of ``visits``.

        The bits of :meth:`grad` on that one example (already charged by :meth:`visits`).
        """
        X, y = visits.examples[step]
        if visits.example_grad is not None:
            return visits.example_grad(params, X, y)
        return self.problem.grad(params, X, y, visits.ones)

    def grad_of_rows(self, params: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Full local gradients of the workers at positions ``rows`` only; zeros elsewhere.

        Workers outside ``rows`` compute nothing and are charged nothing.
        """
        out = torch.zeros_like(params)
        if rows.numel():
            part = LocalData(self.problem, self.shards.take(rows))
            out[rows] = part.grad(params[rows])
            self.grad_evals[rows] += part.grad_evals
        return out

    def per_example_grads(self, params: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per-example gradients ``[w, b, d]`` of the examples at ``index``."""
        self.grad_evals += index.shape[1]
        X, y = self.shards.gather(index)
        return self.problem.per_example_grads(params, X, y)

    def hvp(
        self, params: torch.Tensor, v: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Local Hessian times ``v[w, d]`` on the batch ``index`` or the whole shard."""
        self.hvps += 1
        if index is None:
            shards = self.shards
            return self.problem.hvp(params, shards.X, shards.y, shards.weight, v)
        return self.problem.hvp(params, *self._batch(index), v)

    def hvp_rows(self, params: torch.Tensor, v: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Local Hessian times ``v`` on the whole shard, charged to the ``active`` workers only.

        All rows are computed in one batched call; rows of inactive workers are not used by
        the caller (a CG iteration of a worker that has already converged).
        """
        self.hvps += active.to(torch.int64)
        shards = self.shards
        return self.problem.hvp(params, shards.X, shards.y, shards.weight, v)

    def hessian(self, params: torch.Tensor) -> torch.Tensor:
        """Local Hessian ``[w, d, d]`` on the whole shard (costs d HVPs)."""
        self.hvps += params.shape[1]
        return self.problem.hessian(params, self.shards.X, self.shards.y, self.shards.weight)


@functools.lru_cache(maxsize=64)
def _ones(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The unit weights of a batch of ``shape``, made once (they are only ever read)."""
    return torch.ones(shape, dtype=dtype, device=device)
