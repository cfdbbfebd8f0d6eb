"""Batched linear-algebra helpers shared by the linear models (worker axis first).

Matrix-vector products are written as row-vector times matrix, ``[w, 1, d] @ [w, d, b]``: on
CPU that ``bmm`` is about ten times faster than ``[w, b, d] @ [w, d, 1]`` (or the einsum
``"wbd,wd->wb"``) for the small shapes of simulated workers (measured while writing
``benchmarks/bench_simulate.py``).

The design ``A[w, b, d]`` may also be a sparse COO tensor (wide LIBSVM data,
:mod:`lowcomm.data.sparse`): its products are then sums over its non-zeros (``index_add``),
O(non-zeros) instead of O(w b d), and exact in every other respect. Per-example gradients and
Hessians are dense by nature (``w b d`` and ``w d²`` numbers), so they take :func:`dense`.
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
    if A.is_sparse:
        ones = torch.ones(*A.shape[:2], 1, dtype=A.dtype, device=A.device).to_sparse()
        return torch.cat([A, ones], dim=2)
    return torch.cat([A, A.new_ones(*A.shape[:2], 1)], dim=2)


def dense(A: torch.Tensor) -> torch.Tensor:
    """``A`` as a dense tensor."""
    return A.to_dense() if A.is_sparse else A


def squared_norm(params: torch.Tensor) -> torch.Tensor:
    """``||x||²`` of each worker's parameters ``[w, d]``, ``[w]``."""
    return torch.einsum("wd,wd->w", params, params)


def matvec(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A[w] @ x[w]`` for ``A[w, b, d]`` and ``x[w, d]``, ``[w, b]``."""
    if A.is_sparse:
        return matmul(A, x[:, :, None])[:, :, 0]
    return torch.bmm(x.unsqueeze(1), A.mT).squeeze(1)


def rmatvec(A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``A[w]ᵀ @ c[w]`` for ``A[w, b, d]`` and ``c[w, b]``, ``[w, d]``."""
    if A.is_sparse:
        return rmatmul(A, c[:, :, None])[:, 0, :]
    return torch.bmm(c.unsqueeze(1), A).squeeze(1)


def matmul(A: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``A[w] @ M[w]`` for ``A[w, b, d]`` and ``M[w, d, k]``, ``[w, b, k]``."""
    if not A.is_sparse:
        return torch.bmm(A, M)
    (worker, row, column), values = A._indices(), A._values()
    w, b = A.shape[:2]
    terms = values[:, None] * M[worker, column]
    out = M.new_zeros(w * b, M.shape[2]).index_add_(0, worker * b + row, terms)
    return out.view(w, b, -1)


def rmatmul(A: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``R[w]ᵀ @ A[w]`` for ``A[w, b, d]`` and ``R[w, b, k]``, ``[w, k, d]``."""
    if not A.is_sparse:
        return torch.bmm(R.transpose(1, 2), A)
    (worker, row, column), values = A._indices(), A._values()
    w, _, d = A.shape
    terms = values[:, None] * R[worker, row]
    out = R.new_zeros(w * d, R.shape[2]).index_add_(0, worker * d + column, terms)
    return out.view(w, d, -1).transpose(1, 2)
