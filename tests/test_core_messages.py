import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from lowcomm.core.messages import (
    AnyPayload,
    Bundle,
    Dense,
    Download,
    LowRankFactors,
    Permutation,
    Quantized,
    Scalars,
    ScaledSigns,
    SignBits,
    Sparse,
    Upload,
)


@given(st.integers(1, 5), st.integers(1, 300))
def test_dense_float32_costs_4d_bytes(w: int, d: int) -> None:
    payload = Dense(torch.zeros(w, d, dtype=torch.float32))
    assert payload.nbytes().tolist() == [4 * d] * w


def test_dense_float64_costs_8d_bytes() -> None:
    assert Dense(torch.zeros(2, 7, dtype=torch.float64)).nbytes().tolist() == [56, 56]


def test_sparse_costs_8_bytes_per_kept_entry_and_never_the_padding() -> None:
    counts = torch.tensor([3, 0, 5])
    payload = Sparse(torch.zeros(3, 5, dtype=torch.int32), torch.zeros(3, 5), counts, dim=1000)
    assert payload.nbytes().tolist() == [24, 0, 40]


def test_sparse_to_dense_ignores_padding() -> None:
    indices = torch.tensor([[4, 1, 0], [2, 2, 0]], dtype=torch.int32)
    values = torch.tensor([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])
    dense = Sparse(indices, values, torch.tensor([2, 2]), dim=5).to_dense()
    assert dense.tolist() == [[0, 2, 0, 0, 1], [0, 0, 7, 0, 0]]


def test_scalars_permutation_and_sign_bits_sizes() -> None:
    assert Scalars(torch.zeros(2, 3)).nbytes().tolist() == [12, 12]
    assert Permutation(torch.zeros(1, 10, dtype=torch.int32)).nbytes().tolist() == [40]
    assert SignBits(torch.zeros(2, 17, dtype=torch.bool)).nbytes().tolist() == [3, 3]


def test_bundle_costs_the_sum_of_its_parts() -> None:
    bundle = Bundle((Dense(torch.zeros(2, 4)), Scalars(torch.zeros(2, 1))))
    assert bundle.nbytes().tolist() == [20, 20]


def test_a_skip_is_not_a_message() -> None:
    up = Upload(Dense(torch.zeros(3, 4)), torch.tensor([True, False, True]))
    assert up.nbytes().tolist() == [16, 0, 16]


def test_take_selects_rows_in_order() -> None:
    payload = Dense(torch.arange(6.0).reshape(3, 2))
    assert payload.take(torch.tensor([2, 0])).values.tolist() == [[4, 5], [0, 1]]


def test_broadcast_download_gives_every_recipient_the_same_row() -> None:
    down = Download(Dense(torch.tensor([[1.0, 2.0]])), broadcast=True)
    rows = down.for_workers(torch.arange(3))
    assert isinstance(rows, Dense)
    np.testing.assert_array_equal(rows.values.numpy(), [[1, 2]] * 3)


def _every_kind(rows: int) -> list[AnyPayload]:
    """One payload of each leaf kind (and a bundle) with ``rows`` rows."""
    counts = torch.arange(rows) % 3
    return [
        Dense(torch.zeros(rows, 5, dtype=torch.float64)),
        Sparse(torch.zeros(rows, 3, dtype=torch.int32), torch.zeros(rows, 3), counts, 9),
        Scalars(torch.zeros(rows, 2)),
        Permutation(torch.zeros(rows, 7, dtype=torch.int32)),
        SignBits(torch.zeros(rows, 17, dtype=torch.bool)),
        ScaledSigns(torch.zeros(rows, 10, dtype=torch.bool), torch.zeros(rows, 2), (4, 6)),
        Quantized(torch.zeros(rows, 1), torch.zeros(rows, 11, dtype=torch.int8), 5, (11,)),
        LowRankFactors(torch.zeros(rows, 12), (4,), (6,), (1,)),
        Bundle(
            (
                Dense(torch.zeros(rows, 4)),
                Sparse(torch.zeros(rows, 2), torch.ones(rows, 2), counts, 5),
            )
        ),
    ]


@given(st.integers(0, 4))
def test_host_byte_counts_are_the_tensor_byte_counts(rows: int) -> None:
    for payload in _every_kind(rows):
        host = payload.host_nbytes()
        assert host.dtype == np.int64 and host.shape == (rows,)
        assert host.tolist() == payload.nbytes().tolist(), type(payload).__name__


def test_take_keeps_the_kind_and_the_metadata() -> None:
    for payload in _every_kind(3):
        rows = payload.take(torch.tensor([2, 0]))
        assert type(rows) is type(payload) and rows.rows == 2
        assert rows.nbytes().tolist() == payload.nbytes()[[2, 0]].tolist()
    quantized = Quantized(torch.ones(2, 1), torch.arange(6).reshape(2, 3), 5, (3,))
    taken = quantized.take(torch.tensor([1]))
    assert (taken.s, taken.segments, taken.levels.tolist()) == (5, (3,), [[3, 4, 5]])
