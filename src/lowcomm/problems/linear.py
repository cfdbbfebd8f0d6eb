"""Batched linear-algebra helpers shared by the linear models (worker axis first).

Matrix-vector products are written as row-vector times matrix, ``[w, 1, d] @ [w, d, b]``: on
CPU that ``bmm`` is about ten times faster than ``[w, b, d] @ [w, d, 1]`` (or the einsum
``"wbd,wd->wb"``) for the small shapes of simulated workers (measured while writing
``benchmarks/bench_simulate.py``).
"""

from __future__ import annotations

import torch


def normalise_weights(weight: torch.Tensor) -> torch.Tensor:
    """Per-worker weights ``weight[w, b]`` scaled to sum to one; an all-padding row stays zero.

    An empty worker then contributes only its L2 term instead of a NaN.
    """
    total = weight.sum(dim=1, keepdim=True)
    return weight / torch.where(total > 0, total, torch.ones_like(total))


def design_matrix(X: torch.Tensor, fit_intercept: bool) -> torch.Tensor:
    """Rows ``a_i``: the features of ``X[w, b, ...]`` flattened, plus a trailing 1 if intercept."""
    A = X.flatten(start_dim=2)
    if not fit_intercept:
        return A
    return torch.cat([A, A.new_ones(*A.shape[:2], 1)], dim=2)


def squared_norm(params: torch.Tensor) -> torch.Tensor:
    """``||x||²`` of each worker's parameters ``[w, d]``, ``[w]``."""
    return torch.einsum("wd,wd->w", params, params)


def matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A[w] @ x[w]`` for ``A[w, b, d]`` and ``x[w, d]``, ``[w, b]``."""
    return torch.bmm(x.unsqueeze(1), A.mT).squeeze(1)


def rmatvec(A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``A[w]ᵀ @ c[w]`` for ``A[w, b, d]`` and ``c[w, b]``, ``[w, d]``."""
    return torch.bmm(c.unsqueeze(1), A).squeeze(1)
