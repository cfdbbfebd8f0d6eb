"""Low rank (PowerSGD-style): exact at full rank, warm start, tensors sent whole, shapes."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.compress.error_feedback import ErrorFeedback
from lowcomm.compress.lowrank import LowRank, most_square
from lowcomm.core.errors import InvalidConfigError
from tests.test_compress import key


def low_rank_rows(rows: int, n: int, m: int, rank: int, seed: int = 0) -> torch.Tensor:
    """``rows`` random n x m matrices of rank ``rank``, flattened row-major, float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, n, rank, generator=g, dtype=torch.float64)
    b = torch.randn(rows, rank, m, generator=g, dtype=torch.float64)
    return (a @ b).flatten(1)


@settings(deadline=None, max_examples=30)
@given(st.integers(1, 3), st.integers(0, 2), st.integers(0, 50))
def test_a_matrix_of_rank_at_most_rank_is_sent_exactly(rank: int, extra: int, seed: int) -> None:
    x = low_rank_rows(2, 9, 12, rank, seed)  # 9 x 12 is the most square view of 108
    compressor = LowRank(rank + extra, (108,))
    message, _ = compressor.compress(x, compressor.init(2, 108, x.dtype), key(2, seed))
    assert message.ranks == (rank + extra,)
    torch.testing.assert_close(message.to_dense(), x, rtol=1e-10, atol=1e-10)


def test_warm_start_continues_the_power_iteration() -> None:
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    compressor = LowRank(1, (64,))
    fresh = compressor.init(2, 64, x.dtype)
    first, state = compressor.compress(x, fresh, key(2, 0))
    second, _ = compressor.compress(x, state, key(2, 0))
    again, _ = compressor.compress(x, fresh, key(2, 0))
    assert torch.equal(state.q, first.numbers[:, 8:])  # Q (8 x 1) follows P (8 x 1)
    assert state.drawn.all() and not fresh.drawn.any()
    assert torch.equal(again.numbers, first.numbers)  # from a fresh state: the same message
    # the same input from the kept Q: one more power iteration, a better rank-1 approximation
    error = [(m.to_dense() - x).norm(dim=1) for m in (first, second)]
    assert (error[1] < error[0]).all()


def test_the_first_q_depends_on_the_worker_not_the_round() -> None:
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(2)).expand(2, 64)
    compressor = LowRank(2, (64,))
    state = compressor.init(2, 64, x.dtype)
    early, _ = compressor.compress(x, state, key(2, 0))
    late, _ = compressor.compress(x, state, key(2, 9))
    assert torch.equal(early.numbers, late.numbers)
    assert not torch.allclose(early.numbers[0], early.numbers[1])


def test_tensors_too_small_to_gain_are_sent_whole() -> None:
    x = torch.randn(3, 3 + 64 + 5, generator=torch.Generator().manual_seed(3))
    compressor = LowRank(2, (3, 64, 5))  # 1 x 3, 8 x 8 and 1 x 5
    assert compressor.layout == ((1, 3, 0), (8, 8, 2), (1, 5, 0))
    message, state = compressor.compress(x, compressor.init(3, 72, x.dtype), key(3))
    dense = message.to_dense()
    assert torch.equal(dense[:, :3], x[:, :3]) and torch.equal(dense[:, 67:], x[:, 67:])
    assert message.numbers.shape == (3, 3 + 2 * (8 + 8) + 5)
    assert state.q.shape == (3, 8 * 2)


def test_shapes_choose_the_matrix_view() -> None:
    # rank 1 as a 2 x 12 matrix (a tensor of shape (2, 3, 4)), but not as the most square 4 x 6
    x = low_rank_rows(1, 2, 12, 1, seed=4)
    with_shapes = LowRank(1, (24,), ((2, 3, 4),))
    assert with_shapes.layout == ((2, 12, 1),) and LowRank(1, (24,)).layout == ((4, 6, 1),)
    for compressor, exact in ((with_shapes, True), (LowRank(1, (24,)), False)):
        message, _ = compressor.compress(x, compressor.init(1, 24, x.dtype), key(1))
        assert torch.allclose(message.to_dense(), x, atol=1e-10) == exact


def test_error_feedback_keeps_what_the_factors_miss() -> None:
    x = torch.randn(2, 100, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ef = ErrorFeedback(LowRank(2, (100,)))
    state = ef.init(2, 100, x.dtype)
    total_sent = torch.zeros_like(x)
    for round_ in range(5):
        message, state = ef.compress(x, state, key(2, round_))
        total_sent += message.to_dense()
    # sent over five rounds plus what is kept is the five inputs, to float64 rounding
    torch.testing.assert_close(total_sent + state.residual, 5 * x, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("size", "view"), [(1, (1, 1)), (7, (1, 7)), (12, (3, 4)), (64, (8, 8)), (90, (9, 10))]
)
def test_most_square_factorisation(size: int, view: tuple[int, int]) -> None:
    assert most_square(size) == view


def test_rank_and_shapes_are_checked() -> None:
    with pytest.raises(InvalidConfigError, match="'rank' parameter of lowrank"):
        LowRank(0, (4,))
    with pytest.raises(InvalidConfigError, match=r"tensor shapes of sizes \(6, 2\)"):
        LowRank(1, (6, 2), ((2, 2), (2,)))
    with pytest.raises(InvalidConfigError, match="sum to 9"):
        LowRank(1, (6, 2)).init(1, 9, torch.float32)
