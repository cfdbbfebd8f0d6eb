"""Example orders as a component of SGD: which examples each worker visits, epoch by epoch.

An epoch visits n examples per worker (the smallest shard, cut to a multiple of 2b so that every
worker takes the same number of steps and units pair up), b per step.

The kept examples (one rule for every order, as the authors' scripts cut their training set to
m x n up front): a run (:func:`~lowcomm.experiments.runner.prepare`) keeps n examples of every
worker's shard, chosen by a uniform draw that depends only on the seed, the worker and its shard
(the stream ``kept``, :mod:`lowcomm.experiments.kept`), and removes the others from the
training set before anything is built. Every order then permutes exactly the kept examples:
each is visited once per epoch, D-RR and the balanced orders see the same examples, and
``train_loss`` (and a reproduction's f*) is the objective on the kept set. The removal is
printed (one line on stderr) and recorded in ``run.json`` (``data.removed``: count, global ids
in the loaded training set, why; ``data.n_train`` is the kept count). Shards given to the
algorithm directly (not through ``prepare``) are still cut to their first n positions of each
order, as :func:`epoch_length` says. What an order permutes,
the *unit* (spec ../shared/papers/cd-grab.md, 3.3), is one of:

* ``example`` (the per-example mode): single examples; an order is a permutation of a worker's
  example ids and balancing works on per-example gradients, b per step;
* ``minibatch`` (the per-minibatch mode, the authors' ``CD_GraB_SingleGrad``): fixed groups of
  b examples, one per step. Group u of worker j is the examples at positions u*b .. (u+1)*b - 1
  of its epoch-0 uniform order, fixed for the whole run (lowcomm's choice: the authors' units
  are their data loader's batches, e.g. bptt chunks); an order is a permutation of the n/b
  unit indices, epoch 0 visits them in the identity order (so it visits the same examples in
  the same order as ``example`` mode), and balancing works on the units' mean gradients, pairing
  consecutive steps 2i and 2i+1 (the first of each pair waits as :class:`Pending`).

The orders, for either unit:

* ``d-rr``: every worker draws a fresh uniform order of its units each epoch from its own
  stream (the authors' torch.distributed scripts seed every rank alike, so their workers draw
  the same index permutation; lowcomm keeps the workers independent, as their simulations do;
  minibatch units draw from the stream ``unit-order``);
* ``so``: one order per worker, drawn once and reused every epoch (with minibatch units, the
  identity order of the groups, which are themselves a uniform draw: the same examples in the
  same order as ``so`` with example units);
* ``id-grab`` / ``id-grab-mean``: every worker balances its own units' gradients alone
  (pair balance / GraB's mean balance with the previous epoch's mean); nothing extra is sent;
* ``cd-grab``: the coordinated order server on the aggregator, as the authors' code ships it:
  workers upload their units' gradients (b x d per-example values, or the d-vector minibatch
  mean), the server runs coordinated pair balance over them and sends each worker its next
  order (one int32 index per unit) at the epoch's end;
* ``cd-grab-signs`` (lowcomm's extension, not the paper's): the server sends back one sign bit
  per pair instead, from which each worker rebuilds its order. With example units the workers
  upload their mean gradient plus their pair differences, optionally projected to
  ``projection`` dimensions by a random Gaussian matrix shared through the run's seed; with
  minibatch units they upload only the minibatch mean, which the server pairs itself.

Epoch 0 visits a uniform order of the examples (as the authors' scripts other than HMDA do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from lowcomm.core.rng import Streams

ORDERS = ("d-rr", "so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs")
SERVER_ORDERS = ("cd-grab", "cd-grab-signs")
UNITS = ("example", "minibatch")


def epoch_length(sizes: torch.Tensor, batch_size: int) -> int:
    """Examples per worker per epoch: the smallest shard cut to a multiple of 2b."""
    return int(sizes.min()) // (2 * batch_size) * (2 * batch_size)


def uniform_orders(
    streams: Streams, workers: torch.Tensor, epoch: int, sizes: torch.Tensor, length: int
) -> torch.Tensor:
    """A uniform order of each worker's shard for ``epoch``, its first ``length`` positions."""
    width = int(sizes.max())
    return streams.permutations("order", workers, epoch, sizes, width)[:, :length]


@dataclass(frozen=True)
class Units:
    """What an order permutes (``kind``: ``example`` or ``minibatch``), for batch size b.

    Orders are ``[w, count]`` unit ids: example ids, or indices of the fixed minibatches.
    """

    kind: str
    batch: int

    @property
    def size(self) -> int:
        """Examples per unit: 1, or b."""
        return self.batch if self.kind == "minibatch" else 1

    @property
    def per_step(self) -> int:
        """Units each worker visits per step: b, or 1."""
        return self.batch // self.size

    def count(self, length: int) -> int:
        """Units in an epoch of ``length`` examples per worker."""
        return length // self.size

    def first(
        self, streams: Streams, workers: torch.Tensor, sizes: torch.Tensor, length: int
    ) -> torch.Tensor:
        """Epoch 0's orders (``so``: every epoch's): uniform examples, or the groups in turn."""
        if self.kind == "example":
            return uniform_orders(streams, workers, 0, sizes, length)
        return torch.arange(self.count(length), device=workers.device).repeat(workers.shape[0], 1)

    def shuffled(
        self,
        streams: Streams,
        workers: torch.Tensor,
        epoch: int,
        sizes: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        """Uniform orders for ``epoch`` (``d-rr``), each from its worker's own stream."""
        if self.kind == "example":
            return uniform_orders(streams, workers, epoch, sizes, length)
        count = self.count(length)
        counts = torch.full((workers.shape[0],), count, device=workers.device)
        return streams.permutations("unit-order", workers, epoch, counts, count)

    def examples(
        self,
        order: torch.Tensor,
        streams: Streams,
        workers: torch.Tensor,
        sizes: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        """The example ids ``[w, length]`` visited under the unit orders ``order[w, count]``."""
        if self.kind == "example":
            return order
        w, size = order.shape[0], self.size
        groups = uniform_orders(streams, workers, 0, sizes, length).reshape(w, -1, size)
        visited = torch.gather(groups, 1, order[:, :, None].expand(-1, -1, size))
        return visited.reshape(w, length)


class Pending(NamedTuple):
    """A unit left unpaired at the end of a step (``[w, 0 or 1]`` ids and gradients)."""

    ids: torch.Tensor
    grads: torch.Tensor


def pair_up(
    pending: Pending, ids: torch.Tensor, grads: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, Pending]:
    """Consecutive pairs of the pending unit followed by this step's ``ids``/``grads``.

    Returns pair ids ``[w, p, 2]``, the differences first minus second ``[w, p, d]`` and what is
    left pending (an odd unit waits for the next step: one unit per step pairs across steps).
    """
    ids = torch.cat([pending.ids, ids], dim=1)
    grads = torch.cat([pending.grads, grads], dim=1)
    w, count = ids.shape
    paired = count // 2 * 2
    pair_grads = grads[:, :paired].reshape(w, -1, 2, grads.shape[2])
    deltas = pair_grads[:, :, 0] - pair_grads[:, :, 1]
    rest = Pending(ids[:, paired:], grads[:, paired:])
    return ids[:, :paired].reshape(w, -1, 2), deltas, rest


def no_pending(
    rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
) -> Pending:
    """Nothing pending (on ``device``; None: the default device)."""
    ids = torch.zeros(rows, 0, dtype=torch.int64, device=device)
    return Pending(ids, torch.zeros(rows, 0, dim, dtype=dtype, device=device))


def fresh_pair_balancer(
    rows: int,
    sums: int,
    length: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device | None = None,
) -> PairBalanceState:
    """A pair balancer at the start of an epoch (``sums`` running sums) on ``device``."""
    return PairBalanceState(
        torch.zeros(sums, dim, dtype=dtype, device=device),
        torch.zeros(rows, length, dtype=torch.int64, device=device),
        torch.zeros(rows, dtype=torch.int64, device=device),
    )


class PairBalanceState(NamedTuple):
    """A pair balancer mid-epoch: running sums, the next orders being built, the next slot.

    ``running`` is ``[1, d]`` for the coordinated server and ``[w, d]`` per worker otherwise;
    ``slot`` (the number of pairs placed so far) is one value per row.
    """

    running: torch.Tensor
    next_order: torch.Tensor
    slot: torch.Tensor


def balance_pairs(
    state: PairBalanceState,
    pair_ids: torch.Tensor | None,
    deltas: torch.Tensor,
    coordinated: bool,
) -> tuple[PairBalanceState, torch.Tensor]:
    """Decide the signs of ``deltas[w, p, k]`` (first minus second) and place the pairs.

    ``coordinated``: one running sum for all workers, pairs visited pair first, worker second
    (CD-GraB); else one running sum per worker (ID-GraB). ``pair_ids`` None: decide only (the
    workers place their own pairs). Returns the signs ``[w, p]``. The sequential decisions run
    in NumPy on the host; the results go back to the device of ``deltas``.
    """
    running = state.running.cpu().numpy().copy()
    d = deltas.cpu().numpy()
    w, p = d.shape[:2]
    signs = np.empty((w, p), dtype=bool)
    for pair in range(p):
        if coordinated:
            for worker in range(w):
                plus = float(running[0] @ d[worker, pair]) <= 0.0
                running[0] += d[worker, pair] if plus else -d[worker, pair]
                signs[worker, pair] = plus
        else:
            plus_all = np.einsum("wk,wk->w", running, d[:, pair]) <= 0.0
            running += np.where(plus_all[:, None], d[:, pair], -d[:, pair])
            signs[:, pair] = plus_all
    decided = torch.from_numpy(signs).to(deltas.device)
    slot = int(state.slot.reshape(-1)[0])
    next_order = state.next_order
    if pair_ids is not None:
        next_order = place(next_order, pair_ids, decided, slot)
    new = PairBalanceState(torch.from_numpy(running).to(deltas.device), next_order, state.slot + p)
    return new, decided


def place(
    next_order: torch.Tensor, pair_ids: torch.Tensor, signs: torch.Tensor, slot: int
) -> torch.Tensor:
    """Put each pair's +1 member at the next front slot and its partner at the next back slot."""
    out = next_order.clone()
    n, p = out.shape[1], pair_ids.shape[1]
    first, second = pair_ids[..., 0], pair_ids[..., 1]
    front = torch.where(signs, first, second)
    back = torch.where(signs, second, first)
    out[:, slot : slot + p] = front
    out[:, n - slot - p : n - slot] = back.flip(1)
    return out


class MeanBalanceState(NamedTuple):
    """GraB's mean balancer mid-epoch, per worker."""

    running: torch.Tensor
    stale_mean: torch.Tensor
    accumulated: torch.Tensor
    next_order: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor


def balance_mean(
    state: MeanBalanceState, ids: torch.Tensor, grads: torch.Tensor
) -> MeanBalanceState:
    """Visit ``grads[w, b, d]`` in order: centre, sign by <s, c> <= 0, front or back."""
    running, order = state.running.clone(), state.next_order.clone()
    left, right = state.left.clone(), state.right.clone()
    rows = torch.arange(ids.shape[0], device=ids.device)
    for k in range(ids.shape[1]):
        c = grads[:, k] - state.stale_mean
        plus = (running * c).sum(dim=1) <= 0
        running += torch.where(plus[:, None], c, -c)
        order[rows, torch.where(plus, left, right)] = ids[:, k]
        left, right = left + plus, right - (~plus).to(right.dtype)
    return state._replace(
        running=running,
        accumulated=state.accumulated + grads.sum(dim=1),
        next_order=order,
        left=left,
        right=right,
    )


def rebuild_from_signs(visited: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Next orders from the visited unit orders ``[w, u]`` and the pair signs ``[w, u/2]``."""
    pair_ids = visited.reshape(visited.shape[0], -1, 2)
    return place(torch.empty_like(visited), pair_ids, signs, 0)
