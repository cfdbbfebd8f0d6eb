"""Payloads on the wire: a generic codec and point-to-point transport over ``torch.distributed``.

A payload travels as a self-describing int64 header followed by one uint8 buffer. The header
starts with the buffer's byte count; then, depth first, each payload node gives its type code
and each of its dataclass fields a tagged entry: a tensor's dtype code, rank and shape, an
integer's value, a tuple of payloads' length followed by its nodes (so nested :class:`Bundle`
works), or a tuple of integers' length followed by the integers (metadata such as segments).
The buffer holds every tensor's raw bytes in header order, booleans packed eight to a byte (so
sign bits cost on the wire what the ledger bills). Moving raw bytes keeps the codec
generic over payload types and dtypes (``bool`` included) and identical on gloo and NCCL.

A worker sends only its own row: :func:`row` cuts it out and trims a :class:`Sparse` row to
its ``counts`` entries, so padding never travels. :func:`assemble` rebuilds one payload from
the rows of all workers, with zero rows (no sparse entries) for workers that did not send; the
byte size of every sent row is unchanged, because sizes depend only on dtypes, shapes past the
worker axis and sparse counts.

Headers are host tensors; a payload's data travel on the backend's device (:func:`_device`) and
are decoded on the device the receiver computes on, so a rank computing on its GPU under NCCL
never copies a payload through the host.

A point-to-point message waits at most the limit of :func:`waiting` (the run's timeout); one
that fails raises :class:`PeerError` naming its peer: it did not answer within that limit, or
its connection closed (it exited or was killed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lowcomm.core.device import HOST
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

_TYPES: tuple[type[Any], ...] = (
    Dense,
    Sparse,
    Scalars,
    Permutation,
    SignBits,
    Bundle,
    ScaledSigns,
    Quantized,
    LowRankFactors,
)
_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
)
_TENSOR, _INT, _TUPLE, _INTS = 0, 1, 2, 3
_INT64 = torch.int64


# --- codec --------------------------------------------------------------------------------


def encode(payload: AnyPayload) -> tuple[torch.Tensor, torch.Tensor]:
    """The int64 header and the uint8 data buffer of ``payload``."""
    words: list[int] = []
    tensors: list[torch.Tensor] = []
    _encode_node(payload, words, tensors)
    chunks = [_raw_bytes(t) for t in tensors]
    data = torch.cat(chunks) if chunks else _no_bytes(payload.device)
    return torch.tensor([data.numel(), *words], dtype=_INT64, device=HOST), data


_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def _raw_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes; booleans packed eight to a byte, as the ledger bills them."""
    flat = tensor.contiguous().reshape(-1)
    if tensor.dtype != torch.bool:
        return flat.view(torch.uint8)
    padded = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)]).reshape(-1, 8)
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=flat.device)
    return (padded.to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def _unpack_bits(chunk: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` booleans that :func:`_raw_bytes` packed into ``chunk``."""
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=chunk.device)
    return (chunk[:, None] & weights).ne(0).reshape(-1)[:count]


def _encode_node(node: Any, words: list[int], tensors: list[torch.Tensor]) -> None:
    if type(node) not in _TYPES:
        raise TypeError(f"cannot encode {type(node).__name__}: not a payload type")
    words.append(_TYPES.index(type(node)))
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if isinstance(value, torch.Tensor):
            if value.dtype not in _DTYPES:
                raise TypeError(f"cannot encode {field.name}: unsupported dtype {value.dtype}")
            words += [_TENSOR, _DTYPES.index(value.dtype), value.dim(), *value.shape]
            tensors.append(value)
        elif isinstance(value, tuple) and all(isinstance(part, int) for part in value):
            words += [_INTS, len(value), *value]
        elif isinstance(value, tuple):
            words += [_TUPLE, len(value)]
            for part in value:
                _encode_node(part, words, tensors)
        else:
            words += [_INT, int(value)]


def decode(header: torch.Tensor, data: torch.Tensor) -> AnyPayload:
    """The payload that :func:`encode` turned into ``header`` and ``data``."""
    reader = _Reader(header.tolist(), data)
    payload: AnyPayload = reader.node()
    return payload


class _Reader:
    """A cursor over a header's words and the data buffer's bytes."""

    def __init__(self, words: list[int], data: torch.Tensor) -> None:
        self.words, self.data = words, data
        self.pos, self.offset = 1, 0

    def word(self) -> int:
        self.pos += 1
        return self.words[self.pos - 1]

    def tensor(self) -> torch.Tensor:
        dtype = _DTYPES[self.word()]
        shape = [self.word() for _ in range(self.word())]
        count = math.prod(shape)
        size = -(-count // 8) if dtype == torch.bool else count * dtype.itemsize
        chunk = self.data[self.offset : self.offset + size].clone()
        self.offset += size
        if dtype == torch.bool:
            return _unpack_bits(chunk, count).reshape(shape)
        return chunk.view(dtype).reshape(shape)

    def node(self) -> Any:
        cls = _TYPES[self.word()]
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            tag = self.word()
            if tag == _TENSOR:
                values[field.name] = self.tensor()
            elif tag == _TUPLE:
                values[field.name] = tuple(self.node() for _ in range(self.word()))
            elif tag == _INTS:
                values[field.name] = tuple(self.word() for _ in range(self.word()))
            else:
                values[field.name] = self.word()
        return cls(**values)


# --- rows ---------------------------------------------------------------------------------


def row(payload: AnyPayload, index: int) -> AnyPayload:
    """Row ``index`` as a one-row payload, sparse parts trimmed to their ``counts`` entries."""
    return _trim(payload.take(torch.tensor([index], device=payload.device)))


def no_rows(payload: AnyPayload) -> AnyPayload:
    """A payload with the structure of ``payload`` and no rows (encodes to a header only)."""
    return payload.take(torch.empty(0, dtype=_INT64, device=payload.device))


def _trim(payload: AnyPayload) -> AnyPayload:
    if isinstance(payload, Sparse):
        return payload.widen(int(payload.counts.max()) if payload.rows else 0)
    if isinstance(payload, Bundle):
        return _with_parts(payload, [_trim(p) for p in payload.parts])
    return payload


def _with_parts(bundle: Bundle, parts: Sequence[AnyPayload]) -> Bundle:
    # Bundle's annotation lists the leaf types; the codec also carries nested bundles.
    return Bundle(tuple(parts))  # type: ignore[arg-type]


def assemble(
    rows: Sequence[AnyPayload], sent: torch.Tensor, like: AnyPayload | None = None
) -> AnyPayload:
    """One payload with a row per entry of ``sent``, rebuilt from the rows that travelled.

    Args:
        rows: one-row payloads of the senders, in worker order (``len(rows) == sent.sum()``).
        sent: bool ``[w]``; rows where it is False are zeros (sparse: no entries).
        like: any payload of the same structure; needed only when ``rows`` is empty.

    Sparse parts are padded to the largest count among the rows.
    """
    if len(rows) != int(sent.sum()):
        raise ValueError(f"{len(rows)} rows for {int(sent.sum())} senders")
    template = rows[0] if rows else like
    if template is None:
        raise ValueError("assemble needs a row or `like` to know the payload's structure")
    return _assemble(list(rows), sent.tolist(), template)


def _assemble(rows: Sequence[AnyPayload], sent: list[bool], like: AnyPayload) -> AnyPayload:
    blank = _blank(like)
    received = iter(rows)
    return concat([next(received) if s else blank for s in sent])


def _blank(like: AnyPayload) -> AnyPayload:
    """One row of ``like``'s structure holding nothing (zeros; sparse: no entries)."""
    if isinstance(like, Bundle):
        return _with_parts(like, [_blank(p) for p in like.parts])
    if isinstance(like, Sparse):
        like = like.widen(0)
    return _map_tensors(like, lambda name, t: t.new_zeros((1, *t.shape[1:])))


def _map_tensors(
    payload: AnyPayload, fn: Callable[[str, torch.Tensor], torch.Tensor]
) -> AnyPayload:
    """``payload`` with each tensor field ``t`` named ``name`` replaced by ``fn(name, t)``."""
    values = {field.name: getattr(payload, field.name) for field in dataclasses.fields(payload)}
    cls: Any = type(payload)
    rebuilt: AnyPayload = cls(
        **{k: fn(k, v) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
    )
    return rebuilt


# --- transport ----------------------------------------------------------------------------


class PeerError(RuntimeError):
    """A message to or from ``peers`` failed: they did not answer in time, or they are gone.

    ``timed_out``: the wait of ``seconds`` ran out (gloo then closes that connection);
    otherwise the connection closed or was reset (the peer exited or was killed).
    """

    def __init__(self, peers: Sequence[int], detail: str, seconds: float) -> None:
        super().__init__(f"rank(s) {', '.join(map(str, peers))}: {detail}")
        self.peers, self.seconds = tuple(peers), seconds
        self.timed_out = any(word in detail.lower() for word in ("timed out", "timeout"))


_LIMIT = [timedelta(seconds=300.0)]  # how long one message may wait (see ``waiting``)


@contextmanager
def waiting(seconds: float) -> Iterator[None]:
    """Let each point-to-point message of the block wait at most ``seconds``."""
    before, _LIMIT[0] = _LIMIT[0], timedelta(seconds=seconds)
    try:
        yield
    finally:
        _LIMIT[0] = before


def limit() -> float:
    """The seconds a message may wait now (see :func:`waiting`)."""
    return _LIMIT[0].total_seconds()


@contextmanager
def _with(peers: Sequence[int]) -> Iterator[None]:
    """Turn the backend's error in a message with ``peers`` into a :class:`PeerError`."""
    try:
        yield
    except RuntimeError as exc:
        raise PeerError(peers, str(exc), limit()) from exc


def _wait(work: dist.Work | None) -> None:
    """Wait for a message, at most the :func:`waiting` limit (None: not in the group)."""
    if work is not None:
        work.wait(_LIMIT[0])


def _device() -> torch.device:
    """Where messages must live for the default group's backend (NCCL moves CUDA tensors)."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def send_tensor(tensor: torch.Tensor, dst: int) -> None:
    """Send ``tensor`` to rank ``dst`` (blocking, at most the :func:`waiting` limit)."""
    with _with([dst]):
        _wait(dist.isend(tensor.contiguous().to(_device()), dst))


def recv_tensor(
    shape: Sequence[int], dtype: torch.dtype, src: int, device: torch.device = HOST
) -> torch.Tensor:
    """Receive a tensor of known shape and dtype from rank ``src``, on ``device``."""
    buffer = torch.empty(tuple(shape), dtype=dtype, device=_device())
    with _with([src]):
        _wait(dist.irecv(buffer, src))
    return buffer.to(device)


def recv_tensor_any(
    shape: Sequence[int], dtype: torch.dtype, expected: Sequence[int]
) -> torch.Tensor:
    """A tensor from whichever rank sends first (gloo only), on the host.

    ``expected``: the ranks that may send (named if none does in time).
    """
    buffer = torch.empty(tuple(shape), dtype=dtype)
    with _with(expected):
        _wait(dist.irecv(buffer, src=None))
    return buffer


def send_bytes(data: torch.Tensor, dst: int) -> None:
    """Send a uint8 tensor of any length to rank ``dst``: its length, then its bytes."""
    send_tensor(torch.tensor([data.numel()], dtype=torch.int64), dst)
    send_tensor(data, dst)


def recv_bytes(src: int) -> torch.Tensor:
    """Receive what :func:`send_bytes` sent from rank ``src``, on the host."""
    (length,) = recv_tensor((1,), torch.int64, src).tolist()
    return recv_tensor((length,), torch.uint8, src)


def broadcast_tensor(
    tensor: torch.Tensor | None,
    shape: Sequence[int],
    dtype: torch.dtype,
    src: int = 0,
    device: torch.device = HOST,
) -> torch.Tensor:
    """Rank ``src``'s ``tensor`` (of known shape and dtype) on every rank, on ``device``."""
    if dist.get_rank() == src:
        assert tensor is not None, "the source rank must give the tensor"
        buffer = tensor.contiguous().to(_device())
    else:
        buffer = torch.empty(tuple(shape), dtype=dtype, device=_device())
    dist.broadcast(buffer, src)
    return buffer.to(device)


def send_payload(payload: AnyPayload, dst: int) -> None:
    """Send ``payload`` to rank ``dst``: header length, header, then data (if any)."""
    header, data = encode(payload)
    send_tensor(torch.tensor([header.numel()], device=HOST), dst)
    send_tensor(header, dst)
    if data.numel():
        send_tensor(data, dst)


def recv_payload(src: int, device: torch.device = HOST) -> AnyPayload:
    """Receive a payload sent by :func:`send_payload` on rank ``src``, onto ``device``."""
    length = int(recv_tensor((1,), _INT64, src)[0])
    header = recv_tensor((length,), _INT64, src)
    size = int(header[0])
    data = recv_tensor((size,), torch.uint8, src, device) if size else _no_bytes(device)
    return decode(header, data)


def broadcast_payload(
    payload: AnyPayload | None, src: int = 0, device: torch.device = HOST
) -> AnyPayload:
    """Rank ``src``'s ``payload`` on every rank; the others pass None and get it on ``device``."""
    if dist.get_rank() == src:
        assert payload is not None, "the source rank must give the payload"
        header, data = encode(payload)
        broadcast_tensor(torch.tensor([header.numel()], device=HOST), (1,), _INT64, src)
        broadcast_tensor(header, header.shape, _INT64, src)
        if data.numel():
            broadcast_tensor(data, data.shape, torch.uint8, src)
        return payload
    length = int(broadcast_tensor(None, (1,), _INT64, src)[0])
    header = broadcast_tensor(None, (length,), _INT64, src)
    size = int(header[0])
    data = broadcast_tensor(None, (size,), torch.uint8, src, device) if size else _no_bytes(device)
    return decode(header, data)


def _no_bytes(device: torch.device) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8, device=device)
