"""The compressor seam: explicit state in, payload and state out (optax-style).

A compressor turns the rows ``values[w, d]`` a group of workers wants to send into a payload
(one of :data:`~lowcomm.core.messages.Compressed`) and carries whatever state it needs (error
feedback keeps a residual). Random compressors draw from the keyed streams of the workers in
``key``, so a worker's draws do not depend on the engine. A compressor whose sparse rows never
repeat an index nor pad declares ``DISTINCT_ENTRIES = True``: error feedback then updates its
residual in place (:func:`~lowcomm.compress.error_feedback.leftover`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Compressed, Dense, Sparse
from lowcomm.core.rng import Streams


@dataclass(frozen=True)
class DrawKey:
    """Where random draws come from: the run's streams, the rows' worker ids and the round."""

    streams: Streams
    workers: torch.Tensor
    round: int


class Compressor(Protocol):
    """``init`` makes the state of ``rows`` workers; ``compress`` maps rows to a payload."""

    def init(
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> Any:
        """State for ``rows`` workers sending ``dim`` values, on ``device`` (None: the default)."""
        ...

    def compress(self, values: torch.Tensor, state: Any, key: DrawKey) -> tuple[Compressed, Any]:
        """The payload for ``values[w, d]`` and the new state."""
        ...


class Stateless(NamedTuple):
    """The state of compressors that keep nothing."""


@dataclass(frozen=True)
class Identity:
    """No compression: the rows are sent dense (4 bytes per float32 value)."""

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> Stateless:
        return Stateless()

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: Stateless, key: DrawKey
    ) -> tuple[Dense, Stateless]:
        return Dense(values), state


def sparse_rows(values: torch.Tensor, indices: torch.Tensor, scale: float = 1.0) -> Sparse:
    """The entries ``indices[w, k]`` of ``values[w, d]`` (times ``scale``) as int32 sparse rows."""
    kept = torch.gather(values, 1, indices) * scale
    counts = torch.full(
        (values.shape[0],), indices.shape[1], dtype=torch.int64, device=values.device
    )
    return Sparse(indices.to(torch.int32), kept, counts, values.shape[1])


def check_segments(owner: str, segments: tuple[int, ...]) -> None:
    """Require the sizes of one or more tensors, each at least 1."""
    if not segments or any(size < 1 for size in segments):
        raise InvalidConfigError("segments", owner, "positive tensor sizes", segments)


def check_dim(owner: str, segments: tuple[int, ...], dim: int) -> None:
    """Require tensor sizes that make up a vector of ``dim`` values."""
    if sum(segments) != dim:
        raise InvalidConfigError("segments", owner, f"tensor sizes that sum to {dim}", segments)


def tensor_norms(values: torch.Tensor, segments: tuple[int, ...], order: float) -> torch.Tensor:
    """The ``order``-norm of each tensor's block of each row of ``values[w, d]``: ``[w, T]``."""
    blocks = values.split(segments, dim=1)
    return torch.stack([torch.linalg.vector_norm(b, order, dim=1) for b in blocks], dim=1)
