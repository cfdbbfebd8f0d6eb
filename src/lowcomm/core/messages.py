"""Typed payloads: what crosses the wire, with a worker axis, each knowing its size in bytes.

Every payload holds one row per worker (leading axis ``w``). Its size is computed from the
tensors it carries (element width times elements, index width for sparse entries, bits where
the encoding packs them below a byte), so the ledger cannot drift from what is sent. A worker
that skips sends no message at all: an :class:`Upload` carries a ``sent`` mask and masked-out
rows cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple, Protocol, Self, TypeVar

import torch


class Payload(Protocol):
    """A batch of messages, one row per worker."""

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the payload's tensors live."""
        ...

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows], on the payload's device."""
        ...

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index`` (a 1-D int64 tensor), in that order."""
        ...


@dataclass(frozen=True)
class _Rows:
    """A payload whose tensor fields all have the worker axis; its other fields are metadata."""

    def _tensors(self) -> dict[str, torch.Tensor]:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {name: v for name, v in values.items() if isinstance(v, torch.Tensor)}

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        return next(iter(self._tensors().values())).shape[0]

    @property
    def device(self) -> torch.device:
        """Where the payload's tensors live."""
        return next(iter(self._tensors().values())).device

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index`` (a 1-D int64 tensor), in that order; metadata unchanged."""
        return replace(self, **{name: t[index] for name, t in self._tensors().items()})


@dataclass(frozen=True)
class _OneTensor(_Rows):
    """A payload held in one tensor with a worker axis; costs its row's bytes as stored."""

    @property
    def _tensor(self) -> torch.Tensor:
        tensor: torch.Tensor = getattr(self, fields(self)[0].name)
        return tensor

    def _row_bytes(self) -> int:
        t = self._tensor
        return t[0].numel() * t.element_size() if t.shape[0] else 0

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows]."""
        return _each_row(self, self._row_bytes())


def _each_row(payload: _Rows, nbytes: int) -> torch.Tensor:
    """``nbytes`` for each row of ``payload``, int64 [rows] on its device."""
    return torch.full((payload.rows,), nbytes, dtype=torch.int64, device=payload.device)


def _packed(bits: int) -> int:
    """Bytes that hold ``bits`` bits packed: ceil(bits / 8)."""
    return -(-bits // 8)


def segment_index(segments: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """The tensor number of each of the sum(segments) positions of a flat vector, int64."""
    sizes = torch.tensor(segments, device=device)
    return torch.repeat_interleave(torch.arange(len(segments), device=device), sizes)


@dataclass(frozen=True)
class Dense(_OneTensor):
    """A dense vector per worker: ``values[w, d]``; costs d times the value width."""

    values: torch.Tensor

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]`` themselves."""
        return self.values


@dataclass(frozen=True)
class Sparse(_Rows):
    """Sparse entries per worker: the first ``counts[w]`` columns of ``indices`` and ``values``.

    Rows may carry different numbers of entries (padding past ``counts`` is never sent). Each
    entry costs one index (int32: 4 bytes) plus one value (float32: 4 bytes).
    """

    indices: torch.Tensor
    values: torch.Tensor
    counts: torch.Tensor
    dim: int

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        width = self.indices.element_size() + self.values.element_size()
        return self.counts.to(torch.int64) * width

    def widen(self, width: int) -> Sparse:
        """The same rows with exactly ``width`` entry columns (cut, or padded with zeros)."""

        def fit(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :width]
            return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)

        return Sparse(fit(self.indices), fit(self.values), self.counts, self.dim)

    def to_dense(self) -> torch.Tensor:
        """The dense rows ``[w, dim]`` (padding entries contribute nothing)."""
        columns = torch.arange(self.values.shape[1], device=self.values.device)
        valid = columns[None, :] < self.counts[:, None]
        out = self.values.new_zeros(self.rows, self.dim)
        out.scatter_add_(1, self.indices.to(torch.int64) * valid, self.values * valid)
        return out


@dataclass(frozen=True)
class Scalars(_OneTensor):
    """A few scalars per worker (a loss, a step size): ``values[w, s]``."""

    values: torch.Tensor


@dataclass(frozen=True)
class Permutation(_OneTensor):
    """An order of a worker's n examples: ``indices[w, n]`` as int32 (4 bytes each)."""

    indices: torch.Tensor


@dataclass(frozen=True)
class SignBits(_OneTensor):
    """One bit per entry, packed: ``signs[w, n]`` (bool) costs ceil(n / 8) bytes."""

    signs: torch.Tensor

    def _row_bytes(self) -> int:
        return _packed(self.signs.shape[1])


@dataclass(frozen=True)
class ScaledSigns(_Rows):
    """Scaled signs (EF-signSGD; Karimireddy et al., 2019): entry i of tensor j is ±scales[w, j].

    ``signs[w, d]`` (bool, True for +) travel packed, one bit each: ceil(d / 8) bytes; plus one
    scale per tensor of ``segments`` at the scales' width (float32: 4 bytes).
    """

    signs: torch.Tensor
    scales: torch.Tensor
    segments: tuple[int, ...]

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        scales = self.scales.shape[1] * self.scales.element_size()
        return _each_row(self, _packed(self.signs.shape[1]) + scales)

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: scale_j * sign."""
        magnitude = self.scales[:, segment_index(self.segments, self.scales.device)]
        return torch.where(self.signs, magnitude, -magnitude)


@dataclass(frozen=True)
class Quantized(_Rows):
    """QSGD levels (Alistarh et al., 2017): entry i of tensor j is norms[w, j] * levels[w, i] / s.

    ``levels[w, d]`` are integers in [-s, s]. Each travels as a sign bit and a level index of
    ceil(log2(s + 1)) bits, packed across the row: ceil(d (1 + ceil(log2(s + 1))) / 8) bytes,
    whatever integer type stores them here; plus one norm per tensor of ``segments`` at the
    norms' width (float32: 4 bytes).
    """

    norms: torch.Tensor
    levels: torch.Tensor
    s: int
    segments: tuple[int, ...]

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        bits = self.levels.shape[1] * (1 + self.s.bit_length())  # bit_length = ceil(log2(s+1))
        norms = self.norms.shape[1] * self.norms.element_size()
        return _each_row(self, _packed(bits) + norms)

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: norm_j * level / s."""
        norms = self.norms[:, segment_index(self.segments, self.norms.device)]
        return norms * self.levels.to(norms.dtype) / self.s


@dataclass(frozen=True)
class LowRankFactors(_OneTensor):
    """Per tensor, rank-r factors (PowerSGD; Vogels et al., 2019) or the tensor itself.

    Tensor j, viewed as an ``heights[j]`` x ``widths[j]`` matrix M, is sent in ``numbers[w, N]``
    as P (n x r) then Q (m x r), both row-major, standing for M ≈ P Qᵀ with r = ``ranks[j]``;
    or, where r = 0, as its n * m values. Costs N times the value width.
    """

    numbers: torch.Tensor
    heights: tuple[int, ...]
    widths: tuple[int, ...]
    ranks: tuple[int, ...]

    def _parts(self) -> list[int]:
        """Columns of ``numbers`` each piece takes: n * m, or n * r and m * r."""
        layout = zip(self.heights, self.widths, self.ranks, strict=True)
        return [size for n, m, r in layout for size in ((n * r, m * r) if r else (n * m,))]

    def to_dense(self) -> torch.Tensor:
        """The rows ``[w, d]``: P Qᵀ of each factored tensor, the others as sent."""
        pieces = iter(torch.split(self.numbers, self._parts(), dim=1))
        blocks = []
        for n, m, r in zip(self.heights, self.widths, self.ranks, strict=True):
            if not r:
                blocks.append(next(pieces))
                continue
            p, q = next(pieces).unflatten(1, (n, r)), next(pieces).unflatten(1, (m, r))
            blocks.append((p @ q.mT).flatten(1))
        return torch.cat(blocks, dim=1)


Leaf = Dense | Sparse | Scalars | Permutation | SignBits | ScaledSigns | Quantized | LowRankFactors
Compressed = Dense | Sparse | ScaledSigns | Quantized | LowRankFactors
"""The payloads a compressor sends: each has ``to_dense()``, the rows it stands for."""


@dataclass(frozen=True)
class Bundle:
    """Several payloads sent together as one message (e.g. a model with a piggy-backed loss)."""

    parts: tuple[Leaf, ...]

    @property
    def rows(self) -> int:  # noqa: D102
        return self.parts[0].rows

    @property
    def device(self) -> torch.device:  # noqa: D102
        return self.parts[0].device

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        return torch.stack([p.nbytes() for p in self.parts]).sum(dim=0)

    def take(self, index: torch.Tensor) -> Bundle:  # noqa: D102
        return Bundle(tuple(p.take(index) for p in self.parts))


AnyPayload = Leaf | Bundle


def concat(payloads: Sequence[AnyPayload]) -> AnyPayload:
    """The rows of several payloads of one structure, stacked in order.

    Sparse rows are padded to the widest; bundles are stacked part by part.
    """
    first = payloads[0]
    if len(payloads) == 1:
        return first
    if isinstance(first, Bundle):
        parts = [
            concat([_as(Bundle, p).parts[i] for p in payloads]) for i in range(len(first.parts))
        ]
        return Bundle(tuple(parts))  # type: ignore[arg-type]
    if isinstance(first, Sparse):
        width = max(_as(Sparse, p).values.shape[1] for p in payloads)
        payloads = [_as(Sparse, p).widen(width) for p in payloads]
    return _stack(payloads)


def _stack(payloads: Sequence[AnyPayload]) -> AnyPayload:
    """Tensor fields concatenated along the worker axis; metadata must agree."""
    first = payloads[0]
    values = {}
    for field in fields(first):
        value = getattr(first, field.name)
        if isinstance(value, torch.Tensor):
            value = torch.cat([getattr(p, field.name) for p in payloads])
        elif any(getattr(p, field.name) != value for p in payloads):
            raise ValueError(f"cannot stack {type(first).__name__} rows of different {field.name}")
        values[field.name] = value
    return replace(first, **values)


_P = TypeVar("_P")


def _as(kind: type[_P], payload: object) -> _P:
    if not isinstance(payload, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(payload).__name__}")
    return payload


class Upload(NamedTuple):
    """What a group of workers sends in one call; ``sent[w]`` False means worker w skipped."""

    payload: AnyPayload
    sent: torch.Tensor

    def nbytes(self) -> torch.Tensor:
        """Bytes each worker sent (0 for a skip), int64 [w]."""
        return torch.where(self.sent, self.payload.nbytes(), 0)

    @staticmethod
    def all(payload: AnyPayload) -> Upload:
        """Every worker sends its row."""
        return Upload(payload, torch.ones(payload.rows, dtype=torch.bool, device=payload.device))


class Download(NamedTuple):
    """What the aggregator sends down: one row for every recipient, or one row per worker.

    ``piggyback`` marks an exchange of a few scalars that a deployment would fold into the
    neighbouring round (GIANT's line-search values): its messages and bytes are recorded, but
    it counts no sync round and pays no per-round latency.
    """

    payload: AnyPayload
    broadcast: bool
    piggyback: bool = False

    def for_workers(self, index: torch.Tensor) -> AnyPayload:
        """The rows the workers at positions ``index`` receive."""
        if self.broadcast:
            return self.payload.take(torch.zeros_like(index))
        return self.payload.take(index)
