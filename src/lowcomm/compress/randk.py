"""Random-k sparsification: k coordinates drawn uniformly without replacement per worker.

With ``rescale`` the kept values are multiplied by d / k, which makes the compressor unbiased:
E[C(x)] = x, since each coordinate is kept with probability k / d (Stich et al., 2018, rand_k).
The draws come from each worker's keyed stream for the round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lowcomm.compress.base import DrawKey, Stateless, sparse_rows
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Sparse
from lowcomm.core.validate import at_least


@dataclass(frozen=True)
class RandomK:
    """Keep k uniformly random coordinates per worker; rescaled by d / k when ``rescale``."""

    DISTINCT_ENTRIES: ClassVar[bool] = True
    k: int
    rescale: bool = True

    def __post_init__(self) -> None:
        at_least("random-k", "k", self.k, 1)

    def init(  # noqa: D102
        self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | None = None
    ) -> Stateless:
        if self.k > dim:
            raise InvalidConfigError("k", "random-k", f"an integer in [1, {dim}]", self.k)
        return Stateless()

    def compress(  # noqa: D102
        self, values: torch.Tensor, state: Stateless, key: DrawKey
    ) -> tuple[Sparse, Stateless]:
        d = values.shape[1]
        keys = key.streams.uniform("random-k", key.workers, key.round, d).to(values.device)
        indices = torch.topk(keys, self.k, dim=1, sorted=False).indices
        scale = d / self.k if self.rescale else 1.0
        return sparse_rows(values, indices, scale), state
