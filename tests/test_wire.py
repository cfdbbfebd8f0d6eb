"""The wire codec: round trips of every payload type, ragged sparse rows, re-assembly, gloo."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import fields

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from lowcomm.compress.spec import CompressorSpec
from lowcomm.core.messages import (
    AnyPayload,
    Bundle,
    Dense,
    LowRankFactors,
    Permutation,
    Quantized,
    Scalars,
    ScaledSigns,
    SignBits,
    Sparse,
    concat,
)
from lowcomm.engines import wire
from lowcomm.engines.torchdist import init_process_group
from tests.test_compress import key


def ragged_sparse() -> Sparse:
    """Three rows with 2, 0 and 4 entries, padded with garbage past the counts."""
    indices = torch.tensor([[3, 1, 7, 7], [9, 9, 9, 9], [0, 2, 4, 6]], dtype=torch.int32)
    values = torch.tensor([[1.0, -2.0, 99, 99], [99, 99, 99, 99], [0.5, 0.25, -1.0, 8.0]])
    return Sparse(indices, values, torch.tensor([2, 0, 4]), dim=10)


def compressed(text: str) -> AnyPayload:
    """A compressor's message for three rows of a vector of tensors of 13, 64 and 3 values."""
    compressor = CompressorSpec(text).build((13, 64, 3))
    x = torch.randn(3, 80, generator=torch.Generator().manual_seed(1))
    message, _ = compressor.compress(x, compressor.init(3, 80, x.dtype), key(3))
    return message


def examples() -> dict[str, AnyPayload]:
    g = torch.Generator().manual_seed(0)
    dense = Dense(torch.randn(3, 5, generator=g, dtype=torch.float64))
    scalars = Scalars(torch.randn(3, 2, generator=g))
    return {
        "dense": dense,
        "dense_bf16": Dense(torch.randn(3, 4, generator=g).to(torch.bfloat16)),
        "sparse": ragged_sparse(),
        "scalars": scalars,
        "permutation": Permutation(
            torch.stack([torch.randperm(6, generator=g) for _ in range(3)]).int()
        ),
        "signbits": SignBits(torch.randn(3, 11, generator=g) > 0),
        "bundle": Bundle((dense, ragged_sparse(), scalars)),
        "nested": Bundle((Bundle((dense, scalars)), ragged_sparse())),  # type: ignore[arg-type]
        "scaled_signs": compressed("sign"),
        "quantized": compressed("qsgd:3"),
        "quantized_int16": compressed("qsgd:1000"),
        "lowrank": compressed("lowrank:2"),
        "compressed_bundle": Bundle((compressed("qsgd:3"), scalars)),
    }


def test_the_compressed_examples_are_the_new_payload_types() -> None:
    payloads = examples()
    assert isinstance(payloads["scaled_signs"], ScaledSigns)
    assert isinstance(payloads["quantized"], Quantized)
    assert payloads["quantized_int16"].levels.dtype == torch.int16  # type: ignore[union-attr]
    lowrank = payloads["lowrank"]
    assert isinstance(lowrank, LowRankFactors) and lowrank.ranks == (0, 2, 0)


def assert_same(a: AnyPayload, b: AnyPayload) -> None:
    assert type(a) is type(b)
    for field in fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), field.name
        elif isinstance(x, tuple) and all(isinstance(p, int) for p in x):
            assert x == y, field.name
        elif isinstance(x, tuple):
            assert len(x) == len(y)
            for p, q in zip(x, y, strict=True):
                assert_same(p, q)
        else:
            assert x == y


def dense_rows(payload: AnyPayload) -> list[torch.Tensor]:
    """Every part as dense rows (through to_dense where it has one), to compare contents."""
    if isinstance(payload, Bundle):
        return [t for p in payload.parts for t in dense_rows(p)]
    if isinstance(payload, Sparse | Dense | ScaledSigns | Quantized | LowRankFactors):
        return [payload.to_dense()]
    return [getattr(payload, fields(payload)[0].name)]


@pytest.mark.parametrize("name", list(examples()))
def test_encode_decode_round_trips_every_payload_type(name: str) -> None:
    payload = examples()[name]
    header, data = wire.encode(payload)
    assert header.dtype == torch.int64 and data.dtype == torch.uint8
    assert int(header[0]) == data.numel()
    assert_same(wire.decode(header, data), payload)


def test_a_sparse_row_travels_without_its_padding() -> None:
    sparse = ragged_sparse()
    for w, count in enumerate([2, 0, 4]):
        one = wire.row(sparse, w)
        assert isinstance(one, Sparse) and one.values.shape == (1, count)
        assert one.nbytes().tolist() == [sparse.nbytes()[w]]
        assert torch.equal(one.to_dense(), sparse.to_dense()[w : w + 1])
        _, data = wire.encode(one)
        assert data.numel() == count * (4 + 4) + 8  # entries plus the int64 count


def test_no_rows_keeps_the_structure_and_sends_no_data() -> None:
    bundle = examples()["bundle"]
    header, data = wire.encode(wire.no_rows(bundle))
    assert data.numel() == 0
    empty = wire.decode(header, data)
    assert isinstance(empty, Bundle) and empty.rows == 0 and len(empty.parts) == 3


@pytest.mark.parametrize("name", list(examples()))
def test_assemble_rebuilds_sent_rows_with_the_same_sizes_and_zero_skips(name: str) -> None:
    payload = examples()[name]
    sent = torch.tensor([True, False, True])
    rows = [wire.decode(*wire.encode(wire.row(payload, w))) for w in (0, 2)]
    rebuilt = wire.assemble(rows, sent)
    assert rebuilt.rows == 3
    assert rebuilt.nbytes()[sent].tolist() == payload.nbytes()[sent].tolist()
    for got, want in zip(dense_rows(rebuilt), dense_rows(payload), strict=True):
        assert torch.equal(got[sent], want[sent])
        assert not got[1].any()


def test_assemble_with_no_sender_needs_the_structure_only() -> None:
    bundle = examples()["bundle"]
    rebuilt = wire.assemble([], torch.zeros(4, dtype=torch.bool), like=wire.no_rows(bundle))
    assert isinstance(rebuilt, Bundle) and rebuilt.rows == 4
    dense, sparse, _ = rebuilt.parts
    assert dense.values.shape == (4, 5) and sparse.counts.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="structure"):
        wire.assemble([], torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="senders"):
        wire.assemble([wire.row(bundle, 0)], torch.zeros(2, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=1, max_size=6))
def test_ragged_sparse_rows_reassemble_exactly(rows_spec: list[tuple[int, bool]]) -> None:
    counts = torch.tensor([c for c, _ in rows_spec])
    sent = torch.tensor([s for _, s in rows_spec])
    n = len(rows_spec)
    indices = torch.randint(0, 20, (n, 7), dtype=torch.int32)
    sparse = Sparse(indices, torch.randn(n, 7), counts, dim=20)
    rows = [wire.row(sparse, w) for w in range(n) if sent[w]]
    rebuilt = wire.assemble(
        [wire.decode(*wire.encode(r)) for r in rows], sent, wire.no_rows(sparse)
    )
    assert isinstance(rebuilt, Sparse)
    assert torch.equal(rebuilt.nbytes(), torch.where(sent, sparse.nbytes(), 0))
    assert torch.equal(rebuilt.to_dense()[sent], sparse.to_dense()[sent])
    assert rebuilt.values.shape[1] == max((c for c, s in rows_spec if s), default=0)


def test_rows_with_different_metadata_do_not_stack() -> None:
    signs = compressed("sign")
    assert isinstance(signs, ScaledSigns)
    other = ScaledSigns(signs.signs, signs.scales, (13, 60, 7))
    with pytest.raises(ValueError, match="different segments"):
        concat([signs, other])


def test_unknown_payloads_and_dtypes_are_refused() -> None:
    with pytest.raises(TypeError, match="not a payload"):
        wire.encode(torch.zeros(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        wire.encode(Dense(torch.zeros(2, 2, dtype=torch.complex64)))


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(fn: Callable[..., None], *args: object, nprocs: int, timeout: float = 120) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes; fail on an error or a hang."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"{fn.__name__} did not finish within {timeout} s")


def _exchange(rank: int, port: int) -> None:
    """Rank 0 sends and broadcasts every example; rank 1 checks what arrives."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_PORT=str(port))
    os.environ.pop("MASTER_ADDR", None)
    os.environ.pop("GLOO_SOCKET_IFNAME", None)
    os.environ["LOWCOMM_BACKEND"] = "gloo"
    torch.set_num_threads(1)
    assert init_process_group()
    assert os.environ["GLOO_SOCKET_IFNAME"].startswith("lo")
    try:
        payloads = [*examples().values(), wire.no_rows(examples()["bundle"])]
        for payload in payloads:
            if rank == 0:
                wire.send_payload(payload, 1)
                back = wire.recv_payload(1)
            else:
                back = wire.recv_payload(0)
                wire.send_payload(back, 0)
            assert_same(back, payload)
            assert_same(wire.broadcast_payload(payload if rank == 0 else None), payload)
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_payloads_cross_two_gloo_processes() -> None:
    spawn(_exchange, free_port(), nprocs=2)


def test_booleans_travel_packed_eight_to_a_byte() -> None:
    signs = torch.rand(3, 21, generator=torch.Generator().manual_seed(0)) > 0.5
    header, data = wire.encode(SignBits(signs))
    assert data.numel() == -(-3 * 21 // 8) == int(header[0])
    back = wire.decode(header, data)
    assert isinstance(back, SignBits) and torch.equal(back.signs, signs)
