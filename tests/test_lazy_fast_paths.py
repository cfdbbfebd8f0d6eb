"""The lazy family's fast paths give the plain computations' numbers, bit for bit.

Filtered top-k against ``torch.topk``; error feedback's in-place residual against
``v - decompress(message)``; compressing only the senders' rows against compressing every row;
the aggregator's newest messages against a row-wise choice.
"""

import pytest
import torch

from lowcomm.algorithms.lazy import _compress, _newest
from lowcomm.compress.base import DrawKey
from lowcomm.compress.error_feedback import ErrorFeedback, ErrorFeedbackState, decompress
from lowcomm.compress.randk import RandomK
from lowcomm.compress.spec import CompressorSpec
from lowcomm.compress.topk import FILTER_MIN, TopK, TopKPerTensor, _filtered, largest
from lowcomm.core.messages import Dense
from lowcomm.core.rng import Streams

SHAPE = (3, FILTER_MIN + 1000)


def long_rows() -> dict[str, torch.Tensor]:
    """Rows long enough to be filtered: random, mostly zero, tied, with a NaN, float64 strided."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(SHAPE, generator=g)
    nan = normal.clone()
    nan[1, 7] = float("nan")
    few = torch.zeros(SHAPE)
    few[:, :10] = 1.0
    return {
        "normal": normal,
        "mostly zero": normal * (torch.rand(SHAPE, generator=g) < 0.4),
        "tied": torch.randint(-50, 51, SHAPE, generator=g).float(),
        "nan": nan,
        "ten nonzeros": few,
        "float64 strided": torch.randn(3, SHAPE[1] + 10, generator=g).double()[:, 5:-5],
    }


ROWS = long_rows()


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns (so that -0.0 differs from 0.0)."""
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


@pytest.mark.parametrize("name", list(ROWS))
@pytest.mark.parametrize("k", [1, 100, 4000])
def test_largest_picks_what_torch_topk_picks(name: str, k: int) -> None:
    values = ROWS[name]
    expected = torch.topk(values.abs(), k, dim=1).indices.sort(dim=1).values
    assert torch.equal(largest(values, k), expected)


def test_the_filter_decides_plain_rows_and_leaves_ties_nans_and_zeros_to_torch_topk() -> None:
    assert _filtered(ROWS["normal"], 4000) is not None
    assert _filtered(ROWS["mostly zero"], 4000) is not None
    assert _filtered(ROWS["tied"], 4000) is None
    assert _filtered(ROWS["nan"], 100) is None
    assert _filtered(ROWS["ten nonzeros"], 5) is None


@pytest.mark.parametrize(
    "inner", [TopKPerTensor(0.01, (SHAPE[1],)), TopK(6), RandomK(6), RandomK(6, rescale=False)]
)
def test_the_residual_is_v_minus_the_dense_message_bit_for_bit(inner) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SHAPE, generator=g) * (torch.rand(SHAPE, generator=g) < 0.5)
    x[0] = -0.0  # a row of signed zeros: top-k keeps some of them
    x[1, :3] = torch.tensor([2.0, -3.0, 4.0])
    residual = torch.where(torch.rand(SHAPE, generator=g) < 0.5, -0.0, 0.0)
    ef = ErrorFeedback(inner)
    state = ErrorFeedbackState(residual, inner.init(*SHAPE, torch.float32))
    message, new = ef.compress(x, state, DrawKey(Streams(0), torch.arange(3), 2))
    assert torch.equal(bits(new.residual), bits((x + residual) - decompress(message)))


@pytest.mark.parametrize(
    "spec", ["topk:0.2", "topk-global:0.2", "randk:0.2", "sign", "qsgd:4", "lowrank:1"]
)
@pytest.mark.parametrize("error_feedback", [False, True])
@pytest.mark.parametrize("senders", [[0, 2], [], [0, 1, 2, 3, 4]])
def test_only_the_senders_are_compressed_with_the_numbers_of_compressing_all(
    spec: str, error_feedback: bool, senders: list[int]
) -> None:
    compressor = CompressorSpec(spec).build((12, 8), error_feedback, shapes=((3, 4), (8,)))
    g = torch.Generator().manual_seed(2)
    values = torch.randn(5, 20, generator=g)
    memory = compressor.init(5, 20, torch.float32)
    if error_feedback:
        memory = memory._replace(residual=torch.randn(5, 20, generator=g))
    sent = torch.zeros(5, dtype=torch.bool)
    sent[senders] = True
    key = DrawKey(Streams(0), torch.arange(4, 9), 3)
    every, every_memory = compressor.compress(values, memory, key)
    message, kept = _compress(compressor, values, memory, sent, key)
    assert message.rows == 5
    assert torch.equal(decompress(message)[sent], decompress(every)[sent])
    assert torch.equal(message.nbytes()[sent], every.nbytes()[sent])
    for new, full, old in zip(_leaves(kept), _leaves(every_memory), _leaves(memory), strict=True):
        assert torch.equal(new[sent], full[sent])
        assert torch.equal(new[~sent], old[~sent])


def _leaves(state: object) -> list[torch.Tensor]:
    """The tensors of a compressor state, in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("senders", [[1, 3], [], [0, 1, 2, 3]])
def test_the_newest_messages_are_the_senders_fresh_rows_and_the_skippers_last(
    sparse: bool, senders: list[int]
) -> None:
    g = torch.Generator().manual_seed(3)
    values, last = torch.randn(4, 30, generator=g), torch.randn(4, 30, generator=g)
    message = TopK(5).compress(values, (), DrawKey(Streams(0), torch.arange(4), 0))[0]
    message = message if sparse else Dense(values)
    sent = torch.zeros(4, dtype=torch.bool)
    sent[senders] = True
    expected = torch.where(sent[:, None], decompress(message), last)
    assert torch.equal(bits(_newest(sent, message, last)), bits(expected))
