"""Messages: what crosses the wire, with a worker axis, each knowing its size in bytes.

Every payload holds one row per worker (leading axis ``w``); the leaf types and how each computes
its size are in :mod:`lowcomm.core.payloads` (re-exported here), so the ledger cannot drift from
what is sent. A :class:`Bundle` sends several together. A worker that skips sends no message at
all: an :class:`Upload` carries a ``sent`` mask and masked-out rows cost nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import NamedTuple, TypeVar

import numpy as np
import torch

from lowcomm.core.payloads import (
    Compressed,
    Dense,
    Leaf,
    LowRankFactors,
    Payload,
    Permutation,
    Quantized,
    Scalars,
    ScaledSigns,
    SignBits,
    Sparse,
    segment_index,
)

__all__ = [
    "AnyPayload",
    "Bundle",
    "Compressed",
    "Dense",
    "Download",
    "Leaf",
    "LowRankFactors",
    "Payload",
    "Permutation",
    "Quantized",
    "Scalars",
    "ScaledSigns",
    "SignBits",
    "Sparse",
    "Upload",
    "concat",
    "segment_index",
]


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

    def host_nbytes(self) -> np.ndarray:  # noqa: D102
        return np.stack([p.host_nbytes() for p in self.parts]).sum(axis=0)

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


@functools.lru_cache(maxsize=256)
def _zeros(rows: int, device: torch.device) -> torch.Tensor:
    """The index of row 0 for each of ``rows`` recipients, made once (it only ever indexes)."""
    return torch.zeros(rows, dtype=torch.int64, device=device)


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
            return self.payload.take(_zeros(index.shape[0], index.device))
        return self.payload.take(index)
