"""Scaled sign: the message is ||v_j||_1 / d_j times sign(v_j), with sign(0) = +."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from lowcomm.compress.sign import ScaledSign
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import ScaledSigns
from tests.test_compress import key, rows_and_segments


@settings(deadline=None)
@given(rows_and_segments())
def test_each_tensor_is_sent_as_its_mean_magnitude_times_the_signs(
    case: tuple[np.ndarray, tuple[int, ...]],
) -> None:
    values, segments = case
    x = torch.from_numpy(values)
    compressor = ScaledSign(segments)
    message, _ = compressor.compress(x, compressor.init(*x.shape, x.dtype), key(x.shape[0]))
    blocks = zip(x.split(segments, dim=1), message.to_dense().split(segments, dim=1), strict=True)
    for block, sent in blocks:
        scale = block.abs().mean(dim=1, keepdim=True)
        torch.testing.assert_close(sent, torch.where(block >= 0, scale, -scale))
    assert torch.equal(message.signs, x >= 0)


def test_zero_entries_are_sent_as_plus_and_a_zero_tensor_as_zeros() -> None:
    x = torch.tensor([[0.0, -2.0, 4.0, 0.0, 0.0]])
    message, _ = ScaledSign((3, 2)).compress(x, (), key(1))
    assert message.to_dense().tolist() == [[2.0, -2.0, 2.0, 0.0, 0.0]]
    assert message.scales.tolist() == [[2.0, 0.0]]


def test_scales_keep_the_values_dtype_and_are_billed_at_its_width() -> None:
    x = torch.randn(2, 17, dtype=torch.float64)
    message, _ = ScaledSign((17,)).compress(x, (), key(2))
    assert message.scales.dtype == torch.float64
    assert message.nbytes().tolist() == [3 + 8, 3 + 8]
    half = ScaledSigns(torch.ones(1, 17, dtype=torch.bool), torch.ones(1, 1), (17,))
    assert half.nbytes().tolist() == [3 + 4]


def test_segments_must_make_up_the_vector() -> None:
    with pytest.raises(InvalidConfigError, match="positive tensor sizes"):
        ScaledSign(())
    with pytest.raises(InvalidConfigError, match="sum to 10"):
        ScaledSign((3, 4)).init(1, 10, torch.float32)
