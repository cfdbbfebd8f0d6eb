"""Typed payloads: what crosses the wire, with a worker axis, each knowing its size in bytes.

Every payload holds one row per worker (leading axis ``w``). Its size is computed from the
tensors it carries (element width times elements, index width for sparse entries), so the
ledger cannot drift from what is sent. A worker that skips sends no message at all: an
:class:`Upload` carries a ``sent`` mask and masked-out rows cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol, Self, TypeVar

import torch


class Payload(Protocol):
    """A batch of messages, one row per worker."""

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        ...

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows]."""
        ...

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index`` (a 1-D int64 tensor), in that order."""
        ...


class _OneTensor:
    """A payload held in one tensor with a worker axis; costs its row's bytes as stored."""

    @property
    def _tensor(self) -> torch.Tensor:
        tensor: torch.Tensor = getattr(self, fields(self)[0].name)  # type: ignore[arg-type]
        return tensor

    @property
    def rows(self) -> int:
        """Number of worker rows."""
        return self._tensor.shape[0]

    def _row_bytes(self) -> int:
        t = self._tensor
        return t[0].numel() * t.element_size() if t.shape[0] else 0

    def nbytes(self) -> torch.Tensor:
        """Bytes of each row's message, int64 [rows]."""
        return torch.full((self.rows,), self._row_bytes(), dtype=torch.int64)

    def take(self, index: torch.Tensor) -> Self:
        """The rows at ``index``, in that order."""
        return type(self)(self._tensor[index])  # type: ignore[call-arg]


@dataclass(frozen=True)
class Dense(_OneTensor):
    """A dense vector per worker: ``values[w, d]``; costs d times the value width."""

    values: torch.Tensor


@dataclass(frozen=True)
class Sparse:
    """Sparse entries per worker: the first ``counts[w]`` columns of ``indices`` and ``values``.

    Rows may carry different numbers of entries (padding past ``counts`` is never sent). Each
    entry costs one index (int32: 4 bytes) plus one value (float32: 4 bytes).
    """

    indices: torch.Tensor
    values: torch.Tensor
    counts: torch.Tensor
    dim: int

    @property
    def rows(self) -> int:  # noqa: D102
        return self.values.shape[0]

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        width = self.indices.element_size() + self.values.element_size()
        return self.counts.to(torch.int64) * width

    def take(self, index: torch.Tensor) -> Sparse:  # noqa: D102
        return Sparse(self.indices[index], self.values[index], self.counts[index], self.dim)

    def widen(self, width: int) -> Sparse:
        """The same rows with exactly ``width`` entry columns (cut, or padded with zeros)."""

        def fit(t: torch.Tensor) -> torch.Tensor:
            t = t[:, :width]
            return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)

        return Sparse(fit(self.indices), fit(self.values), self.counts, self.dim)

    def to_dense(self) -> torch.Tensor:
        """The dense rows ``[w, dim]`` (padding entries contribute nothing)."""
        valid = torch.arange(self.values.shape[1])[None, :] < self.counts[:, None]
        out = torch.zeros(self.rows, self.dim, dtype=self.values.dtype)
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
        return -(-self.signs.shape[1] // 8)


@dataclass(frozen=True)
class Bundle:
    """Several payloads sent together as one message (e.g. a model with a piggy-backed loss)."""

    parts: tuple[Dense | Sparse | Scalars | Permutation | SignBits, ...]

    @property
    def rows(self) -> int:  # noqa: D102
        return self.parts[0].rows

    def nbytes(self) -> torch.Tensor:  # noqa: D102
        return torch.stack([p.nbytes() for p in self.parts]).sum(dim=0)

    def take(self, index: torch.Tensor) -> Bundle:  # noqa: D102
        return Bundle(tuple(p.take(index) for p in self.parts))


AnyPayload = Dense | Sparse | Scalars | Permutation | SignBits | Bundle


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
        rows = [_as(Sparse, p).widen(width) for p in payloads]
        indices, values, counts = (
            torch.cat([getattr(r, name) for r in rows]) for name in ("indices", "values", "counts")
        )
        return Sparse(indices, values, counts, first.dim)
    tensors = [torch.cat([getattr(p, f.name) for p in payloads]) for f in fields(first)]
    result: AnyPayload = type(first)(*tensors)
    return result


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
        return Upload(payload, torch.ones(payload.rows, dtype=torch.bool))


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
