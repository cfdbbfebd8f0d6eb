"""Every compressor string: exact bytes by hand, error feedback, determinism, unbiasedness."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.compress.base import DrawKey
from lowcomm.compress.error_feedback import decompress
from lowcomm.compress.spec import CompressorSpec
from lowcomm.core.rng import Streams
from lowcomm.engines import wire
from tests.test_compress import key, rows_and_segments

EVERY = ["identity", "topk:0.3", "topk-global:0.3", "randk:0.3", "sign", "qsgd:3", "lowrank:1"]

BYTES_BY_HAND = [
    # d = 10 in tensors of 7 and 3 values, float32
    ("identity", (7, 3), 4 * 10),
    ("topk:0.5", (7, 3), 8 * (3 + 1)),  # k_j = floor(0.5 d_j): 3 and 1 (index + value each)
    ("topk-global:0.5", (7, 3), 8 * 5),
    ("randk:0.25", (7, 3), 8 * 2),  # floor(2.5)
    ("randk:0.01", (7, 3), 8 * 1),  # at least one
    ("sign", (7, 3), 2 + 4 * 2),  # ceil(10 / 8) sign bytes + a float32 scale per tensor
    ("qsgd:1", (7, 3), 3 + 4 * 2),  # 10 x (1 + 1) bits = 20 bits -> 3 bytes, + 2 norms
    ("qsgd:4", (7, 3), 5 + 4 * 2),  # 10 x (1 + 3) bits = 40 bits
    ("qsgd:255", (7, 3), 12 + 4 * 2),  # 10 x (1 + 8) bits = 90 bits -> 12 bytes
    ("qsgd:256", (7, 3), 13 + 4 * 2),  # 10 x (1 + 9) bits = 100 bits -> 13 bytes
    ("lowrank:1", (7, 3), 4 * 10),  # 1 x 7 and 1 x 3: nothing to gain, sent whole
    # d = 26 in tensors of 20, 5 and 1 values
    ("topk:0.1", (20, 5, 1), 8 * (2 + 1 + 1)),
    ("topk-global:0.1", (20, 5, 1), 8 * 2),
    ("sign", (20, 5, 1), 4 + 4 * 3),
    ("qsgd:2", (20, 5, 1), 10 + 4 * 3),  # 26 x 3 bits = 78 bits -> 10 bytes
    ("lowrank:1", (20, 5, 1), 4 * ((4 + 5) + 5 + 1)),  # 20 as 4 x 5 at rank 1: P 4 + Q 5
    # d = 100 as a 10 x 10 matrix
    ("lowrank:2", (100,), 4 * 2 * (10 + 10)),
    ("lowrank:4", (100,), 4 * 4 * (10 + 10)),
    ("lowrank:5", (100,), 4 * 100),  # 5 x 20 = 100 numbers: nothing gained, sent whole
]


@pytest.mark.parametrize(("text", "segments", "nbytes"), BYTES_BY_HAND)
def test_bytes_of_every_compressor_by_hand(
    text: str, segments: tuple[int, ...], nbytes: int
) -> None:
    compressor = CompressorSpec(text).build(segments)
    d = sum(segments)
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(d))
    message, _ = compressor.compress(x, compressor.init(3, d, x.dtype), key(3))
    assert message.nbytes().tolist() == [nbytes] * 3
    assert wire.row(message, 1).nbytes().tolist() == [nbytes]


@pytest.mark.parametrize(
    ("shapes", "nbytes"),
    [
        (((4, 25),), 4 * 2 * (4 + 25)),  # 4 x 25 at rank 2 instead of the most square 10 x 10
        (((100,),), 4 * 100),  # a 1-D tensor is sent whole
        (((5, 2, 10),), 4 * 2 * (5 + 20)),  # first dimension by the rest: 5 x 20
        (((2, 5, 10),), 4 * 100),  # 2 x 50 at rank 2: 104 numbers, more than the 100 values
    ],
)
def test_lowrank_bytes_follow_the_shapes_given(
    shapes: tuple[tuple[int, ...], ...], nbytes: int
) -> None:
    compressor = CompressorSpec("lowrank:2").build((100,), shapes=shapes)
    x = torch.randn(2, 100, generator=torch.Generator().manual_seed(0))
    message, _ = compressor.compress(x, compressor.init(2, 100, x.dtype), key(2))
    assert message.nbytes().tolist() == [nbytes] * 2


def float_rounding(v: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
    """A bound on |(sent + (v - sent)) - v| in floating point.

    Rescaled random-k, sign, QSGD and low rank send numbers computed from v (a product, a
    scale, factors), not v's entries: the residual v - sent is rounded once, and the check's
    sum once more. Each rounding is at most eps / 2 times its result's magnitude, and
    |v - sent| + |v| bounds both results (to a factor 1 + eps): eps times it is a safe bound.
    """
    return torch.finfo(v.dtype).eps * ((v - sent).abs() + v.abs())


@settings(max_examples=30, deadline=None)
@given(rows_and_segments(), st.sampled_from(EVERY), st.booleans(), st.integers(0, 3))
def test_error_feedback_sends_plus_keeps_the_input(
    case: tuple[np.ndarray, tuple[int, ...]], text: str, single: bool, round_: int
) -> None:
    values, segments = case
    x = torch.from_numpy(values).to(torch.float32 if single else torch.float64)
    rows, d = x.shape
    ef = CompressorSpec(text).build(segments, error_feedback=True)
    state = ef.init(rows, d, x.dtype)
    state = state._replace(residual=x.flip(1) / 3)
    v = x + state.residual
    message, new = ef.compress(x, state, key(rows, round_))
    sent = decompress(message)
    assert (sent + new.residual - v).abs().le(float_rounding(v, sent)).all()
    if text.startswith(("identity", "topk")):
        assert torch.equal(sent + new.residual, v)  # entries are sent as they are, or kept


@pytest.mark.parametrize("text", EVERY)
def test_the_same_draw_key_gives_the_same_message(text: str) -> None:
    segments = (12, 30, 2)
    compressor = CompressorSpec(text).build(segments, error_feedback=True)
    x = torch.randn(4, 44, generator=torch.Generator().manual_seed(5))
    state = compressor.init(4, 44, x.dtype)

    def message(streams: Streams) -> list[torch.Tensor]:
        sent, _ = compressor.compress(x, state, DrawKey(streams, torch.arange(4), 7))
        return list(wire.encode(sent))

    first, again, other_seed = message(Streams(3)), message(Streams(3)), message(Streams(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    random = text.startswith(("randk", "qsgd", "lowrank"))
    assert random != all(torch.equal(a, b) for a, b in zip(first, other_seed, strict=True))


def mean_of_draws(text: str, x: torch.Tensor, rounds: int, workers: int) -> torch.Tensor:
    """The mean of ``rounds * workers`` messages for ``x``: each round, every worker sends x."""
    compressor = CompressorSpec(text).build((7, 3))
    rows = x.expand(workers, -1)
    state = compressor.init(workers, x.shape[0], x.dtype)
    total = torch.zeros_like(x)
    for r in range(rounds):
        message, _ = compressor.compress(rows, state, key(workers, r))
        total += decompress(message).sum(dim=0)
    return total / (rounds * workers)


X = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0, -0.25, 1.5, 4.0, -2.0, 0.125], dtype=torch.float64)
DRAWS = 200, 100  # 20,000 draws: 200 rounds of 100 workers


def test_random_k_is_unbiased_over_20000_draws() -> None:
    # randk:0.3 keeps k = 3 of d = 10 scaled by d / k: variance x_i^2 (d / k - 1) per draw
    mean = mean_of_draws("randk:0.3", X, *DRAWS)
    standard_error = X.abs() * math.sqrt((10 / 3 - 1) / math.prod(DRAWS))
    assert (mean - X).abs().le(4 * standard_error + 1e-12).all(), (mean - X) / standard_error


@pytest.mark.parametrize("levels", [1, 2, 7])
def test_qsgd_is_unbiased_over_20000_draws(levels: int) -> None:
    mean = mean_of_draws(f"qsgd:{levels}", X, *DRAWS)
    # level l_i is floor(r_i) or floor(r_i) + 1 with p = frac(r_i): the message's variance is
    # (||x_j|| / s)^2 p (1 - p)
    norms = torch.cat([X[:7].norm().expand(7), X[7:].norm().expand(3)])
    r = X.abs() / norms * levels
    p = r - r.floor()
    standard_error = norms / levels * torch.sqrt(p * (1 - p) / math.prod(DRAWS))
    assert (mean - X).abs().le(4 * standard_error + 1e-12).all(), (mean - X) / standard_error
