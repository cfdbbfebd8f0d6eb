"""QSGD: stochastic quantisation of each parameter tensor onto s levels of its norm.

Alistarh, Grubic, Li, Tomioka and Vojnovic (2017), Section 3.1: for block j of a row, v = v_j,

    r_i = s |v_i| / ||v||_2  in [0, s],    l_i = floor(r_i) + Bernoulli(r_i - floor(r_i)),
    Q_s(v_i) = ||v||_2 sign(v_i) l_i / s,

so E[l_i] = r_i and E[Q_s(v)] = v (Lemma 3.1 (i): unbiased). A worker sends one float norm per
tensor and, per value, a sign bit and l_i in 0..s at ceil(log2(s + 1)) bits
(:class:`~lowcomm.core.messages.Quantized` bills the packed size). The Bernoulli draws compare
keyed uniforms u_i (stream ``qsgd``, the worker, the round) with r_i - floor(r_i), so a worker's
message does not depend on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowcomm.compress.base import DrawKey, Stateless, check_dim, check_segments, tensor_norms
from lowcomm.core.messages import Quantized, segment_index
from lowcomm.core.validate import at_least

_LEVEL_TYPES = (torch.int8, torch.int16, torch.int32, torch.int64)


def level_dtype(s: int) -> torch.dtype:
    """The narrowest signed integer type that holds -s..s."""
    return next(t for t in _LEVEL_TYPES if torch.iinfo(t).max >= s)


@dataclass(frozen=True)
class QSGD:
    """Unbiased stochastic quantisation onto ``s`` levels per tensor of sizes ``segments``."""

    s: int
    segments: tuple[int, ...]

    def __post_init__(self) -> None:
        at_least("qsgd", "levels", self.s, 1)
        check_segments("qsgd", self.segments)

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> Stateless:
        check_dim("qsgd", self.segments, dim)
        return Stateless()

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: Stateless, key: DrawKey
    ) -> tuple[Quantized, Stateless]:
        norms = tensor_norms(values, self.segments, 2)
        norm = norms[:, segment_index(self.segments, values.device)]
        ratio = torch.where(norm > 0, values.abs() / norm, 0.0) * self.s
        u = key.streams.uniform("qsgd", key.workers, key.round, values.shape[1])
        low = ratio.floor()
        up = u.to(values.device) < ratio - low
        levels = (low + up).clamp(max=self.s)  # rounding may put r a hair above s
        signed = torch.where(values < 0, -levels, levels).to(level_dtype(self.s))
        return Quantized(norms, signed, self.s, self.segments), state
