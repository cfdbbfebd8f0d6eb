"""How the aggregator combines the rows it received: sum, uniform mean or size-weighted mean."""

from __future__ import annotations

from typing import Literal

import torch

Reduce = Literal["sum", "mean", "size-weighted"]
REDUCTIONS = ("sum", "mean", "size-weighted")


def combine(
    values: torch.Tensor, sent: torch.Tensor, sizes: torch.Tensor, reduce: Reduce
) -> torch.Tensor:
    """Combine ``values[w, ...]`` over the rows that were ``sent``.

    ``sum``: sum of the rows (the LAG/SASG convention, f = sum_m f_m); ``mean``: their
    average; ``size-weighted``: weights n_w / sum n_w of the senders' shard sizes, which gives
    the gradient of the global objective (1/N) sum_i loss_i when all workers send.
    """
    mask = sent.to(values.dtype)
    if reduce == "size-weighted":
        mask = mask * sizes.to(values.dtype)
    weighted = torch.tensordot(mask, values, dims=1)
    if reduce == "sum":
        return weighted
    return weighted / mask.sum().clamp_min(torch.finfo(values.dtype).tiny)
