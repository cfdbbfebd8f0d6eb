"""Scaled sign compression: one bit per value and one scale per parameter tensor.

EF-signSGD (Karimireddy, Rebjock, Stich and Jaggi, 2019, Algorithm 1, C(v) = ||v||_1 / d sign(v))
applied tensor by tensor: block j of a row, of size d_j, is sent as

    C(v_j) = (||v_j||_1 / d_j) sign(v_j),

with sign(0) = +1 (a zero entry is sent as +scale_j; an all-zero block has scale 0 and so
decompresses to zeros). The compressor is biased; the paper pairs it with error feedback
(:class:`~lowcomm.compress.error_feedback.ErrorFeedback`), which restores SGD's rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowcomm.compress.base import DrawKey, Stateless, check_dim, check_segments, tensor_norms
from lowcomm.core.messages import ScaledSigns


@dataclass(frozen=True)
class ScaledSign:
    """Send sign(v) (1 bit per value) and ||v_j||_1 / d_j per tensor of sizes ``segments``."""

    segments: tuple[int, ...]

    def __post_init__(self) -> None:
        check_segments("sign", self.segments)

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> Stateless:
        check_dim("sign", self.segments, dim)
        return Stateless()

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: Stateless, key: DrawKey
    ) -> tuple[ScaledSigns, Stateless]:
        sizes = torch.tensor(self.segments, dtype=values.dtype, device=values.device)
        scales = tensor_norms(values, self.segments, 1) / sizes
        return ScaledSigns(values >= 0, scales, self.segments), state
