"""Compressors: property tests (hypothesis) for top-k, random-k and error feedback."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lowcomm.compress.base import DrawKey, Identity
from lowcomm.compress.error_feedback import ErrorFeedback, decompress
from lowcomm.compress.randk import RandomK
from lowcomm.compress.topk import TopK, TopKPerTensor
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


def key(rows: int, round_: int = 0) -> DrawKey:
    return DrawKey(Streams(0), torch.arange(rows), round_)


@st.composite
def rows_and_segments(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...]]:
    segments = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=4)))
    rows = draw(st.integers(1, 3))
    values = draw(arrays(np.float64, (rows, sum(segments)), elements=finite, unique=True))
    return values, segments


@given(rows_and_segments(), st.floats(0.01, 1.0))
def test_top_k_per_tensor_keeps_exactly_the_largest_of_each_tensor(
    case: tuple[np.ndarray, tuple[int, ...]], density: float
) -> None:
    values, segments = case
    compressor = TopKPerTensor(density, segments)
    sparse, _ = compressor.compress(torch.from_numpy(values), (), key(values.shape[0]))
    kept = sparse.indices.numpy()
    start = 0
    for size, k in zip(segments, compressor.counts(), strict=True):
        assert k == max(1, int(density * size)) >= 1
        for row in range(values.shape[0]):
            mine = [i for i in kept[row] if start <= i < start + size]
            block = np.abs(values[row, start : start + size])
            # the kept magnitudes are the k largest (ties at the k-th may pick either entry)
            assert len(mine) == k
            assert sorted(np.abs(values[row, mine])) == sorted(np.sort(block)[-k:])
        start += size
    np.testing.assert_array_equal(np.take_along_axis(values, kept, 1), sparse.values.numpy())
    assert sparse.nbytes().tolist() == [12 * sum(compressor.counts())] * values.shape[0]


@given(
    arrays(np.float32, (2, 16), elements=st.floats(-100, 100, width=32), unique=True),
    st.integers(1, 16),
)
def test_global_top_k_keeps_the_k_largest_and_costs_8_bytes_each(
    values: np.ndarray, k: int
) -> None:
    sparse, _ = TopK(k).compress(torch.from_numpy(values), (), key(2))
    for row in range(2):
        kept = np.abs(values[row, sparse.indices[row].numpy()])
        assert sorted(kept) == sorted(np.sort(np.abs(values[row]))[-k:])
    assert sparse.nbytes().tolist() == [8 * k, 8 * k]


@settings(max_examples=25)
@given(rows_and_segments(), st.floats(0.05, 1.0), st.integers(0, 50))
def test_error_feedback_sends_plus_keeps_exactly_the_input(
    case: tuple[np.ndarray, tuple[int, ...]], density: float, rounds: int
) -> None:
    values, segments = case
    x = torch.from_numpy(values)
    ef = ErrorFeedback(TopKPerTensor(density, segments))
    state = ef.init(x.shape[0], x.shape[1], x.dtype)
    state = state._replace(residual=torch.full_like(x, 0.5 * rounds))
    message, new = ef.compress(x, state, key(x.shape[0]))
    assert torch.equal(decompress(message) + new.residual, x + state.residual)


def test_error_feedback_with_every_entry_sends_everything_and_keeps_nothing() -> None:
    x = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ef = ErrorFeedback(TopKPerTensor(1.0, (4, 6)))
    message, state = ef.compress(x, ef.init(3, 10, x.dtype), key(3))
    assert torch.equal(decompress(message), x)
    assert not state.residual.any()


def test_random_k_is_unbiased_when_rescaled() -> None:
    x = torch.linspace(-1, 2, 12, dtype=torch.float64)[None].repeat(2, 1)
    compressor = RandomK(3)
    draws = [decompress(compressor.compress(x, (), key(2, r))[0]) for r in range(6000)]
    mean = torch.stack(draws).mean(dim=0)
    # each coordinate is kept with probability 1/4 and scaled by 4: std of the mean ~ 0.045 |x_i|
    torch.testing.assert_close(mean, x, rtol=0.0, atol=0.2)
    kept = torch.stack(draws).ne(0).double().mean(dim=(0, 1))
    torch.testing.assert_close(
        kept, torch.full((12,), 0.25, dtype=torch.float64), atol=0.02, rtol=0
    )


@given(st.integers(1, 20), st.integers(0, 1000))
def test_random_k_picks_k_distinct_coordinates_per_worker(k: int, round_: int) -> None:
    x = torch.arange(1.0, 21.0).repeat(3, 1)
    sparse, _ = RandomK(k, rescale=False).compress(x, (), key(3, round_))
    for row in sparse.indices.tolist():
        assert len(set(row)) == k
    assert torch.equal(sparse.values, torch.gather(x, 1, sparse.indices.long()))


def test_identity_sends_dense_rows() -> None:
    x = torch.ones(2, 5)
    message, _ = Identity().compress(x, (), key(2))
    assert message.nbytes().tolist() == [20, 20]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: TopKPerTensor(0.0, (3,)),
            r"The 'density' parameter of top-k must be a number in \[1e-12, 1.0\]. Got 0.0.",
        ),
        (lambda: TopK(0), "The 'k' parameter of top-k must be an integer >= 1. Got 0."),
        (
            lambda: TopK(5).init(1, 4, torch.float32),
            r"The 'k' parameter of top-k must be an integer in \[1, 4\]. Got 5.",
        ),
        (
            lambda: RandomK(9).init(1, 4, torch.float32),
            r"The 'k' parameter of random-k must be an integer in \[1, 4\]. Got 9.",
        ),
    ],
)
def test_invalid_compressor_settings(make, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        make()
