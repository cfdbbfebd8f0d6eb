"""Low-rank compression: one warm-started power iteration per parameter tensor (PowerSGD).

Vogels, Karimireddy and Jaggi (2019), Algorithm 1, for each worker on its own: block j of a row,
viewed as an n x m matrix M, is sent as two factors of rank r,

    P = M Q,    P <- orthonormalise(P) (reduced QR),    Q <- Mᵀ P,    message (P, Q),  M ≈ P Qᵀ,

and the new Q is kept for the next round (warm start, Section 3), so successive rounds continue
the power iteration on a slowly changing M. A worker's first Q is drawn from keyed standard
normals (stream ``lowrank``, round 0, one step per tensor): it depends on the run's seed and the
worker only. QR keeps rank-deficient P well defined, so a matrix of rank <= r is sent exactly.

Matrix view: a tensor of shape (n, ...) is n x (product of the rest), as PyTorch's PowerSGD hook
does; without shapes, a block of d values is the most square n x m with n <= m (n the largest
divisor of d not above sqrt(d); a prime d gives 1 x d). Blocks where rank r saves nothing,
r (n + m) >= n m (1-D tensors, small ones), are sent whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch

from lowcomm.compress.base import DrawKey, check_dim, check_segments
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import LowRankFactors
from lowcomm.core.validate import at_least

Shapes = tuple[tuple[int, ...], ...]


class LowRankState(NamedTuple):
    """Each worker's Q factors, ``q[w, sum m_j r_j]`` (row-major), and whether it has any yet."""

    q: torch.Tensor
    drawn: torch.Tensor


def most_square(size: int) -> tuple[int, int]:
    """(n, m) with n m = ``size``, n <= m and n as large as possible."""
    n = max(k for k in range(1, math.isqrt(size) + 1) if size % k == 0)
    return n, size // n


def matrix_view(shape: tuple[int, ...]) -> tuple[int, int]:
    """(n, m) of a tensor of ``shape`` seen as its first dimension by the rest."""
    return (shape[0], math.prod(shape[1:])) if shape else (1, 1)


def power_step(matrix: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One power iteration on ``matrix[w, n, m]`` from ``q[w, m, r]``: orthonormal P and Mᵀ P."""
    p = torch.linalg.qr(matrix @ q).Q
    return p, matrix.mT @ p


@dataclass(frozen=True)
class LowRank:
    """Rank-``rank`` factors of each tensor of sizes ``segments`` (optionally of ``shapes``)."""

    rank: int
    segments: tuple[int, ...]
    shapes: Shapes | None = None

    def __post_init__(self) -> None:
        at_least("lowrank", "rank", self.rank, 1)
        check_segments("lowrank", self.segments)
        shapes = self.shapes
        if shapes is not None and tuple(math.prod(s) for s in shapes) != self.segments:
            allowed = f"tensor shapes of sizes {self.segments}"
            raise InvalidConfigError("shapes", "lowrank", allowed, self.shapes)

    @cached_property
    def layout(self) -> tuple[tuple[int, int, int], ...]:
        """(n, m, r) of each tensor; r = 0 where it is sent whole."""
        views = map(matrix_view, self.shapes) if self.shapes else map(most_square, self.segments)
        return tuple((n, m, self.rank if self.rank * (n + m) < n * m else 0) for n, m in views)

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> LowRankState:
        check_dim("lowrank", self.segments, dim)
        width = sum(m * r for _, m, r in self.layout)
        return LowRankState(
            torch.zeros(rows, width, dtype=dtype, device=device),
            torch.zeros(rows, dtype=torch.bool, device=device),
        )

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: LowRankState, key: DrawKey
    ) -> tuple[LowRankFactors, LowRankState]:
        start = self._start(state, key).to(values)
        qs = iter(start.split([m * r for _, m, r in self.layout if r], dim=1))
        numbers, kept = [], []
        for block, (n, m, r) in zip(values.split(self.segments, dim=1), self.layout, strict=True):
            if not r:
                numbers.append(block)
                continue
            p, q = power_step(block.unflatten(1, (n, m)), next(qs).unflatten(1, (m, r)))
            numbers += [p.flatten(1), q.flatten(1)]
            kept.append(q.flatten(1))
        heights, widths, ranks = (tuple(column) for column in zip(*self.layout, strict=True))
        message = LowRankFactors(torch.cat(numbers, dim=1), heights, widths, ranks)
        q = torch.cat(kept, dim=1) if kept else start
        return message, LowRankState(q, torch.ones_like(state.drawn))

    def _start(self, state: LowRankState, key: DrawKey) -> torch.Tensor:
        """The previous round's Q of each worker; keyed normals for a worker's first round."""
        if bool(state.drawn.all()):
            return state.q
        draws = [
            key.streams.normal("lowrank", key.workers, 0, m * r, step=j)
            for j, (_, m, r) in enumerate(self.layout)
            if r
        ]
        fresh = torch.cat(draws, dim=1).to(state.q) if draws else state.q
        return torch.where(state.drawn[:, None], state.q, fresh)
