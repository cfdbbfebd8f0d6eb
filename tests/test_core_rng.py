import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.algorithms.local_data import LocalData
from lowcomm.core import rng
from lowcomm.core.rng import Streams
from tests.conftest import Setup


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


def test_draws_keep_their_pinned_bits() -> None:
    s = Streams(2**40 + 7)
    u = s.uniform("batch", torch.tensor([0, 9]), 12, 2, step=3).flatten().tolist()
    assert [x.hex() for x in u] == [
        "0x1.f61fcfcfdb332p-1",
        "0x1.63793ed6d195dp-1",
        "0x1.5f81fee78c169p-1",
        "0x1.89ece97c38f2ep-1",
    ]
    draws = s.integers("batch", torch.tensor([4]), torch.tensor([5]), 6, torch.tensor([100]), 1)
    assert draws.tolist() == [[83, 95, 20, 45, 15, 52]]
    assert rng._host_key(5, "init", -1, 0) == 14689066780593807280
    assert rng._host_key(-3, "partition", 4, 2) == 1454943928847134526


@settings(max_examples=60, deadline=None)
@given(
    st.integers(-(2**70), 2**70),
    st.lists(st.integers(0, 10**6), min_size=0, max_size=4),
    st.one_of(st.integers(0, 2**40), st.just(-1)),
    st.integers(0, 9),
    st.integers(0, 3),
    st.integers(0, 4),
)
def test_few_draws_in_python_have_the_bits_of_the_tensor_arithmetic(
    seed: int, ids: list[int], round_: int, n: int, first: int, count: int
) -> None:
    s, workers = Streams(seed), torch.tensor(ids, dtype=torch.int64)
    rounds: int | torch.Tensor = torch.arange(len(ids)) * 3 if round_ < 0 else round_
    high = torch.arange(1, len(ids) + 1) * 7
    steps = range(first, first + count)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        uniform = s.uniform_steps("x", workers, rounds, n, steps)
        return uniform, s.integers_steps("x", workers, rounds, n, high, steps)

    few = both()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rng, "_FEW", 0)  # every draw through the tensor arithmetic
        many = both()
        one_by_one = [s.integers("x", workers, rounds, n, high, step) for step in steps]
    assert few[0].shape == many[0].shape == (count, len(ids), n)
    assert torch.equal(few[0], many[0]) and few[0].dtype == torch.float64
    assert torch.equal(few[1], many[1]) and few[1].dtype == torch.int64
    for step, draws in zip(steps, one_by_one, strict=True):
        assert torch.equal(draws, few[1][step - first])


@pytest.mark.parametrize(("batch", "steps"), [(3, 2), (40, 3)])  # in Python; in torch
def test_the_batches_of_all_steps_in_one_call_are_each_steps_sample(batch: int, steps: int) -> None:
    setup = Setup(workers=4)
    data, streams = LocalData(setup.problem, setup.shards), Streams(9)
    batches = data.sample_steps(streams, 5, batch, steps)
    assert batches.shape == (steps, 4, batch)
    for step in range(steps):
        assert torch.equal(batches[step], data.sample(streams, 5, batch, step))


def test_a_round_tensor_of_one_element_is_every_workers_round() -> None:
    s, workers, high = Streams(4), torch.tensor([2, 7, 9]), torch.tensor([10, 20, 30])
    shared = s.integers("x", workers, 6, 5, high)
    for round_ in (torch.tensor(6), torch.tensor([6])):
        assert torch.equal(s.integers("x", workers, round_, 5, high), shared)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(rng, "_FEW", 0)
            assert torch.equal(s.integers("x", workers, round_, 5, high), shared)
