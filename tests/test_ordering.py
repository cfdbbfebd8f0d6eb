"""Balancing rules: the paper's Figure 1, a list-based reference, permutations, herding."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.ordering.balance import (
    coordinated_pair_balance,
    herding_bound,
    independent_pair_balance,
    mean_balance,
)


def reference_coordinated(order: np.ndarray, grads: np.ndarray) -> list[list[int]]:
    """Straight from the spec's pseudo-code, with Python lists for the front and back halves."""
    m, n, _ = grads.shape
    s = np.zeros(grads.shape[2])
    front: list[list[int]] = [[] for _ in range(m)]
    back: list[list[int]] = [[] for _ in range(m)]
    for pair in range(n // 2):
        for j in range(m):
            p, q = 2 * pair, 2 * pair + 1
            delta = grads[j, p] - grads[j, q]
            if s @ delta <= 0:
                front[j].append(int(order[j, p]))
                back[j].append(int(order[j, q]))
                s = s + delta
            else:
                front[j].append(int(order[j, q]))
                back[j].append(int(order[j, p]))
                s = s - delta
    return [front[j] + back[j][::-1] for j in range(m)]


def reference_mean(order: np.ndarray, grads: np.ndarray, mean: np.ndarray) -> list[list[int]]:
    """GraB: +1 examples in visit order, then -1 examples in reverse visit order."""
    out = []
    for j in range(grads.shape[0]):
        s, plus, minus = np.zeros(grads.shape[2]), [], []
        for k in range(grads.shape[1]):
            c = grads[j, k] - mean[j]
            if s @ c <= 0:
                plus.append(int(order[j, k]))
                s = s + c
            else:
                minus.append(int(order[j, k]))
                s = s - c
        out.append(plus + minus[::-1])
    return out


def test_figure_1_two_workers_four_examples() -> None:
    """Signs +, +, -, - in the order w1p1, w2p1, w1p2, w2p2 give x1, x4, x3, x2 on each worker."""
    grads = np.zeros((2, 4, 2))
    grads[0, 0] = grads[0, 2] = [1.0, 0.0]
    grads[1, 0] = grads[1, 2] = [0.0, 1.0]
    order = np.tile(np.arange(4), (2, 1))
    nxt, signs, running = coordinated_pair_balance(order, grads)
    assert signs.tolist() == [[True, True], [False, False]]
    assert nxt.tolist() == [[0, 3, 2, 1], [0, 3, 2, 1]]
    assert running.tolist() == [0.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_balancers_match_list_references_and_produce_permutations(
    m: int, half: int, d: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    n = 2 * half
    grads = rng.normal(size=(m, n, d))
    order = np.stack([rng.permutation(n) + 100 * j for j in range(m)])
    nxt, _, _ = coordinated_pair_balance(order, grads)
    assert nxt.tolist() == reference_coordinated(order, grads)
    mean = rng.normal(size=(m, d))
    assert mean_balance(order, grads, mean).tolist() == reference_mean(order, grads, mean)
    for rule in (nxt, independent_pair_balance(order, grads), mean_balance(order, grads, mean)):
        for j in range(m):
            assert sorted(rule[j]) == sorted(order[j]), "a worker keeps exactly its own examples"


@given(st.integers(1, 6), st.integers(0, 1000))
def test_coordinated_with_one_worker_is_centralised_pair_balance(half: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(1, 2 * half, 3))
    order = rng.permutation(2 * half)[None]
    assert np.array_equal(
        coordinated_pair_balance(order, grads)[0], independent_pair_balance(order, grads)
    )


def test_reordering_fixed_vectors_shrinks_the_herding_bound_and_random_orders_do_not() -> None:
    rng = np.random.default_rng(0)
    m, n, d = 8, 256, 16
    z = rng.normal(size=(m, n, d))
    z /= np.linalg.norm(z, axis=2, keepdims=True)
    centred = z - z.mean(axis=1, keepdims=True)
    start = np.stack([rng.permutation(n) for _ in range(m)])
    order, bounds = start, [herding_bound(start, z)]
    for _ in range(10):
        visited = np.take_along_axis(centred, order[:, :, None], axis=1)
        order, _, _ = coordinated_pair_balance(order, visited)
        bounds.append(herding_bound(order, z))
    random = [herding_bound(np.stack([rng.permutation(n) for _ in range(m)]), z) for _ in range(5)]
    assert bounds[-1] < bounds[0] / 4
    assert min(random) > bounds[-1] * 3


def test_herding_bound_of_a_hand_example() -> None:
    vectors = np.array([[[1.0], [-1.0], [3.0], [-3.0]]])  # mean 0
    assert herding_bound(np.array([[0, 1, 2, 3]]), vectors) == pytest.approx(3.0)
    assert herding_bound(np.array([[2, 3, 0, 1]]), vectors) == pytest.approx(3.0)
    assert herding_bound(np.array([[0, 2, 1, 3]]), vectors) == pytest.approx(4.0)
