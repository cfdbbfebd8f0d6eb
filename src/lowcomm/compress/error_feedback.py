"""Error feedback (memory) as a wrapper around any compressor.

Each worker keeps a residual e (Stich, Cordonnier and Jaggi, 2018; Seide et al., 2014):

    v = x + e,    message = C(v),    e <- v - decompress(message)

so what is sent plus what is kept equals the input: the residual is computed by subtracting the
very values that were sent. For sparsifiers it is v with the sent entries zeroed, exactly; for
compressors that send other numbers (signs, levels, factors), decompress(message) + e equals v
to the rounding of one subtraction and one addition.

A compressor whose sparse rows hold distinct indices and no padding (``DISTINCT_ENTRIES``:
top-k, random-k) has its residual computed in v's own memory, entry by entry, without the dense
rows: the same numbers (v - d is v + (-d) in IEEE arithmetic, and the dense rows are 0 + x at
each entry x), at a fraction of the memory traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from lowcomm.compress.base import Compressor, DrawKey
from lowcomm.core.messages import Compressed, Sparse


class ErrorFeedbackState(NamedTuple):
    """The residual of each worker and the inner compressor's state."""

    residual: torch.Tensor
    inner: Any


def decompress(payload: Compressed) -> torch.Tensor:
    """The dense rows a payload stands for."""
    return payload.to_dense()


def leftover(v: torch.Tensor, message: Compressed, distinct: bool) -> torch.Tensor:
    """``v - decompress(message)``; in ``v`` itself for sparse rows of ``distinct`` entries."""
    if distinct and isinstance(message, Sparse):
        entries = -(message.values + 0.0)  # minus the dense rows' value at each entry
        return v.scatter_add_(1, message.indices.to(torch.int64), entries)
    return v - decompress(message)


@dataclass(frozen=True)
class ErrorFeedback:
    """``inner`` applied to input plus residual; the residual keeps what was not sent."""

    inner: Compressor

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> ErrorFeedbackState:
        return ErrorFeedbackState(
            torch.zeros(rows, dim, dtype=dtype, device=device),
            self.inner.init(rows, dim, dtype, device),
        )

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: ErrorFeedbackState, key: DrawKey
    ) -> tuple[Compressed, ErrorFeedbackState]:
        v = values + state.residual
        message, inner = self.inner.compress(v, state.inner, key)
        distinct = getattr(self.inner, "DISTINCT_ENTRIES", False)
        return message, ErrorFeedbackState(leftover(v, message, distinct), inner)
