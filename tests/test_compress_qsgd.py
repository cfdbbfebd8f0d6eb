"""QSGD: levels, their storage and billing, and the norm; unbiasedness is in test_compress_every."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.compress.qsgd import QSGD, level_dtype
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Quantized
from tests.test_compress import key, rows_and_segments


@settings(deadline=None)
@given(rows_and_segments(), st.integers(1, 300), st.integers(0, 100))
def test_levels_round_s_times_the_normalised_magnitude_up_or_down(
    case: tuple[np.ndarray, tuple[int, ...]], s: int, round_: int
) -> None:
    values, segments = case
    x = torch.from_numpy(values)
    message, _ = QSGD(s, segments).compress(x, (), key(x.shape[0], round_))
    norms = torch.cat(
        [b.norm(dim=1, keepdim=True).expand_as(b) for b in x.split(segments, dim=1)], dim=1
    )
    r = torch.where(norms > 0, x.abs() / norms * s, 0.0)
    levels = message.levels.to(torch.float64)
    assert message.levels.dtype == level_dtype(s)
    assert ((levels.abs() == r.floor()) | (levels.abs() == r.ceil().clamp(max=s))).all()
    assert (levels * x >= 0).all()  # a level has its value's sign
    torch.testing.assert_close(message.to_dense(), norms * levels / s)


def test_a_value_holding_the_whole_norm_gets_the_top_level() -> None:
    x = torch.tensor([[0.0, -3.0, 0.0, 0.0]])
    message, _ = QSGD(5, (3, 1)).compress(x, (), key(1))
    assert message.levels.tolist() == [[0, -5, 0, 0]]
    assert message.to_dense().tolist() == x.tolist()


@pytest.mark.parametrize(
    ("s", "dtype", "bits"),
    [(1, torch.int8, 1), (3, torch.int8, 2), (127, torch.int8, 7), (128, torch.int16, 8)],
)
def test_levels_are_stored_narrow_and_billed_packed(s: int, dtype: torch.dtype, bits: int) -> None:
    assert level_dtype(s) == dtype
    payload = Quantized(torch.ones(2, 3), torch.zeros(2, 11, dtype=dtype), s, (5, 5, 1))
    packed = -(-11 * (1 + bits) // 8)
    assert payload.nbytes().tolist() == [packed + 4 * 3] * 2


def test_levels_must_be_at_least_one() -> None:
    with pytest.raises(InvalidConfigError, match="'levels' parameter of qsgd"):
        QSGD(0, (3,))
