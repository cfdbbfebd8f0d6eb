"""Gradient balancing: turn the gradients seen in one epoch into the next epoch's order.

All rules greedily choose a sign eps for each vector so that a running signed sum s stays small,
eps = +1 iff <s, v> <= 0 (ties, and the first vector, go to +1 as in the authors' code), then
reorder (Lu, Guo and De Sa, NeurIPS 2022; Cooper et al., NeurIPS 2023; spec:
../shared/papers/cd-grab.md, sections 2-3):

* mean balance (GraB): v = g - mean of the previous epoch; +1 examples go to the front in visit
  order, -1 examples to the back in reverse visit order;
* pair balance: v = g_first - g_second of consecutive pairs; the +1 member goes to the next
  front slot, its partner to the next back slot; no stale mean is needed;
* coordinated pair balance (CD-GraB): ONE running sum for all workers, pairs processed pair
  index first and worker second, front/back pointers advanced once per pair index.

The decisions are inherently sequential (each depends on s), so they run as a loop over
vectors with each step vectorised over d (and over workers where they are independent).
Arrays are float64 NumPy: a dot product costs about a microsecond there.
"""

from __future__ import annotations

import numpy as np


def _place_pairs(
    order: np.ndarray, first_wins: np.ndarray, pair: int, nxt: np.ndarray, rows: np.ndarray
) -> None:
    """Put pair ``pair`` of each row's visiting order into the front/back slots of ``nxt``."""
    n = order.shape[1]
    a, b = order[rows, 2 * pair], order[rows, 2 * pair + 1]
    nxt[rows, pair] = np.where(first_wins, a, b)
    nxt[rows, n - 1 - pair] = np.where(first_wins, b, a)


def coordinated_pair_balance(
    order: np.ndarray, grads: np.ndarray, running: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CD-GraB's order server over one epoch.

    Args:
        order: ``[m, n]`` each worker's example ids in the order they were visited (n even).
        grads: ``[m, n, d]`` the gradient of each visited example, in visiting order.
        running: the shared running sum to start from (zeros: a fresh epoch).

    Returns:
        The next orders ``[m, n]``, the signs ``[n/2, m]`` (True = +1), and the running sum.
    """
    m, n, d = grads.shape
    s = np.zeros(d) if running is None else running.copy()
    signs = np.empty((n // 2, m), dtype=bool)
    for pair in range(n // 2):
        for worker in range(m):
            delta = grads[worker, 2 * pair] - grads[worker, 2 * pair + 1]
            plus = float(s @ delta) <= 0.0
            s += delta if plus else -delta
            signs[pair, worker] = plus
    nxt = np.empty_like(order)
    rows = np.arange(m)
    for pair in range(n // 2):
        _place_pairs(order, signs[pair], pair, nxt, rows)
    return nxt, signs, s


def independent_pair_balance(order: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Pair balance run by every worker alone (ID-GraB, PairBal): one running sum per worker."""
    m, n, d = grads.shape
    s = np.zeros((m, d))
    nxt = np.empty_like(order)
    rows = np.arange(m)
    for pair in range(n // 2):
        delta = grads[:, 2 * pair] - grads[:, 2 * pair + 1]
        plus = np.einsum("md,md->m", s, delta) <= 0.0
        s += np.where(plus[:, None], delta, -delta)
        _place_pairs(order, plus, pair, nxt, rows)
    return nxt


def mean_balance(order: np.ndarray, grads: np.ndarray, stale_mean: np.ndarray) -> np.ndarray:
    """GraB's online mean balance, per worker (ID-GraB, Bal): centre with the stale mean.

    ``stale_mean[m, d]`` is each worker's mean gradient of the previous epoch (zeros at first).
    """
    m, n, d = grads.shape
    s = np.zeros((m, d))
    left, right = np.zeros(m, dtype=np.int64), np.full(m, n - 1)
    nxt = np.empty_like(order)
    rows = np.arange(m)
    for k in range(n):
        c = grads[:, k] - stale_mean
        plus = np.einsum("md,md->m", s, c) <= 0.0
        s += np.where(plus[:, None], c, -c)
        slot = np.where(plus, left, right)
        nxt[rows, slot] = order[:, k]
        left += plus
        right -= ~plus
    return nxt


def herding_bound(order: np.ndarray, vectors: np.ndarray) -> float:
    """The parallel herding bound of an order: max_k || sum_{s<=k} sum_j z^j_{order_j(s)} ||_inf.

    ``vectors[m, n, d]`` are indexed by example id; each worker's vectors are centred by their
    mean first (Cooper et al., 2023; the authors' simulation computes exactly this).
    """
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    picked = np.take_along_axis(centred, order[:, :, None], axis=1)
    prefix = np.cumsum(picked.sum(axis=0), axis=0)
    return float(np.abs(prefix).max())
