import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.core.rng import Streams


def test_same_key_same_numbers_and_different_keys_differ() -> None:
    s = Streams(3)
    workers = torch.arange(4)
    a = s.uniform("batch", workers, 5, 10)
    assert torch.equal(a, s.uniform("batch", workers, 5, 10))
    assert not torch.equal(a, s.uniform("batch", workers, 6, 10))
    assert not torch.equal(a, Streams(4).uniform("batch", workers, 5, 10))
    assert not torch.equal(a, s.uniform("other", workers, 5, 10))
    assert not torch.equal(a, s.uniform("batch", workers, 5, 10, step=1))


def test_a_workers_draws_do_not_depend_on_its_group() -> None:
    s = Streams(11)
    everyone = s.uniform("batch", torch.arange(8), 2, 6)
    some = s.uniform("batch", torch.tensor([5, 2]), 2, 6)
    assert torch.equal(some, everyone[[5, 2]])


def test_uniform_draws_look_uniform() -> None:
    u = Streams(0).uniform("x", torch.arange(10), 0, 10_000).numpy()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    assert counts.min() > 9_500 and counts.max() < 10_500


@settings(max_examples=30)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(0, 1000))
def test_permutations_permute_each_workers_own_positions(sizes: list[int], seed: int) -> None:
    width = max(sizes)
    perms = Streams(seed).permutations(
        "order", torch.arange(len(sizes)), 0, torch.tensor(sizes), width
    )
    for row, size in zip(perms.tolist(), sizes, strict=True):
        assert sorted(row[:size]) == list(range(size))
        assert row[size:] == list(range(size, width))


def test_integers_stay_below_each_workers_bound() -> None:
    high = torch.tensor([1, 7, 100])
    draws = Streams(1).integers("batch", torch.arange(3), 0, 500, high)
    assert (draws >= 0).all() and (draws < high[:, None]).all()
    assert set(draws[1].tolist()) == set(range(7))


def test_normal_draws_have_unit_variance() -> None:
    z = Streams(2).normal("noise", torch.arange(4), 0, 20_000)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
