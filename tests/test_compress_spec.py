"""Compressor strings: what CompressorSpec accepts, refuses and builds."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lowcomm.compress.base import Identity
from lowcomm.compress.error_feedback import ErrorFeedback
from lowcomm.compress.lowrank import LowRank
from lowcomm.compress.qsgd import QSGD
from lowcomm.compress.randk import RandomK
from lowcomm.compress.sign import ScaledSign
from lowcomm.compress.spec import COMPRESSORS, CompressorSpec
from lowcomm.compress.topk import TopK, TopKPerTensor
from lowcomm.core.constraints import Text

SEGMENTS = (7, 3)


@pytest.mark.parametrize(
    ("text", "built"),
    [
        ("identity", Identity()),
        ("topk:0.5", TopKPerTensor(0.5, SEGMENTS)),
        ("topk-global:0.5", TopK(5)),
        ("randk:0.25", RandomK(2)),
        ("sign", ScaledSign(SEGMENTS)),
        ("qsgd:4", QSGD(4, SEGMENTS)),
        ("lowrank:2", LowRank(2, SEGMENTS)),
    ],
)
def test_every_compressor_string_builds_its_compressor(text: str, built: object) -> None:
    spec = CompressorSpec(text)
    assert spec.kind == text.partition(":")[0]
    assert spec.build(SEGMENTS) == built
    assert spec.build(SEGMENTS, error_feedback=True) == ErrorFeedback(built)  # type: ignore[arg-type]
    assert Text(COMPRESSORS, CompressorSpec).accepts(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "topk",
        "topk:",
        "topk:0",
        "topk:1.5",
        "topk:nan",
        "topk-global:-0.1",
        "randk:abc",
        "identity:1",
        "sign:1",
        "qsgd",
        "qsgd:0",
        "qsgd:2.5",
        "lowrank:-1",
        "lowrank:r",
        "powersgd:2",
        "TopK:0.1",
    ],
)
def test_bad_compressor_strings_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="compressor"):
        CompressorSpec(text)
    assert not Text(COMPRESSORS, CompressorSpec).accepts(text)


@given(
    st.lists(st.integers(1, 500), min_size=1, max_size=4).map(tuple),
    st.floats(1e-4, 1.0),
)
def test_global_counts_keep_the_floor_of_density_times_d_and_at_least_one(
    segments: tuple[int, ...], density: float
) -> None:
    k = max(1, int(density * sum(segments)))
    assert CompressorSpec(f"topk-global:{density!r}").build(segments) == TopK(k)
    assert CompressorSpec(f"randk:{density!r}").build(segments) == RandomK(k)


def test_shapes_reach_lowrank_only() -> None:
    shapes = (torch.Size([2, 12]), torch.Size([3]))
    built = CompressorSpec("lowrank:1").build((24, 3), shapes=shapes)
    assert built == LowRank(1, (24, 3), ((2, 12), (3,)))
    assert isinstance(built, LowRank) and built.layout == ((2, 12, 1), (3, 1, 0))
    assert CompressorSpec("sign").build((24, 3), shapes=shapes) == ScaledSign((24, 3))
