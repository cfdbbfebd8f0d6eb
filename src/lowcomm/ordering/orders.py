"""Example orders as a component of SGD: which examples each worker visits, epoch by epoch.

An epoch visits n examples per worker (the smallest shard, cut to a multiple of 2b so that every
worker takes the same number of steps and examples pair up), b per step. The orders:

* ``d-rr``: every worker draws a fresh uniform order of its shard each epoch from its own
  stream (the authors' torch.distributed scripts seed every rank alike, so their workers draw
  the same index permutation; lowcomm keeps the workers independent, as their simulations do);
* ``so``: one uniform order per worker, drawn once and reused every epoch;
* ``id-grab`` / ``id-grab-mean``: every worker balances its own per-example gradients alone
  (pair balance / GraB's mean balance with the previous epoch's mean); nothing extra is sent;
* ``cd-grab``: the coordinated order server on the aggregator, as the authors' code ships it:
  workers upload their per-example gradients (b x d values), the server runs coordinated pair
  balance over them and sends each worker its next order (n int32 indices) at the epoch's end;
* ``cd-grab-signs`` (lowcomm's extension, not the paper's): workers upload their mean gradient
  plus their pair differences, optionally projected to ``projection`` dimensions by a random
  Gaussian matrix shared through the run's seed; the server decides the signs on those and sends
  back n/2 sign bits, from which each worker rebuilds its order.

Epoch 0 visits a uniform order (as the authors' scripts other than HMDA do).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from lowcomm.core.rng import Streams

ORDERS = ("d-rr", "so", "id-grab", "id-grab-mean", "cd-grab", "cd-grab-signs")
SERVER_ORDERS = ("cd-grab", "cd-grab-signs")


def epoch_length(sizes: torch.Tensor, batch_size: int) -> int:
    """Examples per worker per epoch: the smallest shard cut to a multiple of 2b."""
    return int(sizes.min()) // (2 * batch_size) * (2 * batch_size)


def uniform_orders(
    streams: Streams, workers: torch.Tensor, epoch: int, sizes: torch.Tensor, length: int
) -> torch.Tensor:
    """A uniform order of each worker's shard for ``epoch``, its first ``length`` positions."""
    width = int(sizes.max())
    return streams.permutations("order", workers, epoch, sizes, width)[:, :length]


class Pending(NamedTuple):
    """An example left unpaired at the end of a step (``[w, 0 or 1]`` ids and gradients)."""

    ids: torch.Tensor
    grads: torch.Tensor


def pair_up(
    pending: Pending, ids: torch.Tensor, grads: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, Pending]:
    """Consecutive pairs of the pending example followed by this step's ``ids``/``grads``.

    Returns pair ids ``[w, p, 2]``, the differences first minus second ``[w, p, d]`` and what is
    left pending (an odd example waits for the next step: b = 1 pairs across steps).
    """
    ids = torch.cat([pending.ids, ids], dim=1)
    grads = torch.cat([pending.grads, grads], dim=1)
    w, count = ids.shape
    paired = count // 2 * 2
    pair_grads = grads[:, :paired].reshape(w, -1, 2, grads.shape[2])
    deltas = pair_grads[:, :, 0] - pair_grads[:, :, 1]
    rest = Pending(ids[:, paired:], grads[:, paired:])
    return ids[:, :paired].reshape(w, -1, 2), deltas, rest


def no_pending(rows: int, dim: int, dtype: torch.dtype) -> Pending:
    """Nothing pending."""
    return Pending(torch.zeros(rows, 0, dtype=torch.int64), torch.zeros(rows, 0, dim, dtype=dtype))


def fresh_pair_balancer(
    rows: int, sums: int, length: int, dim: int, dtype: torch.dtype
) -> PairBalanceState:
    """A pair balancer at the start of an epoch (``sums`` running sums)."""
    return PairBalanceState(
        torch.zeros(sums, dim, dtype=dtype),
        torch.zeros(rows, length, dtype=torch.int64),
        torch.zeros(rows, dtype=torch.int64),
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
    workers place their own pairs). Returns the signs ``[w, p]``.
    """
    running = state.running.numpy().copy()
    d = deltas.numpy()
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
    decided = torch.from_numpy(signs)
    slot = int(state.slot.reshape(-1)[0])
    next_order = state.next_order
    if pair_ids is not None:
        next_order = place(next_order, pair_ids, decided, slot)
    new = PairBalanceState(torch.from_numpy(running), next_order, state.slot + p)
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
    rows = torch.arange(ids.shape[0])
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
    """A worker's next order from its visiting order ``[w, n]`` and the pair signs ``[w, n/2]``."""
    pair_ids = visited.reshape(visited.shape[0], -1, 2)
    return place(torch.empty_like(visited), pair_ids, signs, 0)
