"""Batched linear-algebra helpers shared by the linear models (worker axis first).

Matrix-vector products are written as row-vector times matrix, ``[w, 1, d] @ [w, d, b]``: on
CPU that ``bmm`` is about ten times faster than ``[w, b, d] @ [w, d, 1]`` (or the einsum
``"wbd,wd->wb"``) for the small shapes of simulated workers (measured while writing
``benchmarks/bench_simulate.py``).

The design ``A[w, b, d]`` may also be a sparse COO tensor (wide LIBSVM data,
:mod:`lowcomm.data.sparse`): its products are then sums over its non-zeros (``index_add``),
O(non-zeros) instead of O(w b d), and exact in every other respect. Per-example gradients and
Hessians are dense by nature (``w b d`` and ``w d²`` numbers), so they take :func:`dense`.

A dense float64 CPU design that is large and mostly zeros (a worker's whole shard of binary
LIBSVM features: a9a has 11% non-zeros, w8a 4%) is multiplied through a CSR copy of its rows,
made once per design tensor and kept while the tensor lives (:func:`csr_rows`): products and
weighted Gram matrices ``Aᵀ diag(D) A`` (logistic Hessians) are then sums over its non-zeros,
the same sums in another order, equal to the dense products up to rounding (which GIANT's
50-iteration CG, like any change of summation order, amplifies to about 1e-4 of the loss),
and 1.5-4x faster for the second-order methods on a9a and w8a. Mini-batches and anything
tracked by autograd stay dense.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.weak import WeakIdKeyDictionary

CSR_DENSITY = 0.2
"""Largest share of non-zeros of a dense design multiplied through its CSR rows."""
CSR_MIN_ROWS = 256
"""Fewest rows per worker of a dense design multiplied through its CSR rows."""

_CSR = WeakIdKeyDictionary()  # base tensor -> {view: its rows as CSR, None if not worth it}


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
    rows = None if x.requires_grad else csr_rows(A)
    if rows is not None:
        vectors = x.detach().numpy()
        return _stacked([m @ v for m, v in zip(rows, vectors, strict=True)], x.dtype)
    return torch.bmm(x.unsqueeze(1), A.mT).squeeze(1)


def rmatvec(A: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``A[w]ᵀ @ c[w]`` for ``A[w, b, d]`` and ``c[w, b]``, ``[w, d]``."""
    if A.is_sparse:
        return rmatmul(A, c[:, :, None])[:, 0, :]
    rows = None if c.requires_grad else csr_rows(A)
    if rows is not None:
        vectors = c.detach().numpy()
        return _stacked([m.T @ v for m, v in zip(rows, vectors, strict=True)], c.dtype)
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


def csr_rows(A: torch.Tensor) -> list[sp.csr_matrix] | None:
    """Each worker's rows ``A[w]`` as CSR when ``A`` is a large, mostly zero, dense design.

    That is: a dense float64 CPU tensor, not tracked by autograd, with at least
    :data:`CSR_MIN_ROWS` rows per worker and at most :data:`CSR_DENSITY` non-zeros. Made once
    per tensor (a view, such as ``X[None]``, shares its base's copies; the tensors are never
    changed in place); None for any other design.
    """
    if A.shape[1] < CSR_MIN_ROWS:  # e.g. a single-example step's row: nothing to look up
        return None
    base = A if A._base is None else A._base
    views = _CSR.get(base)
    if views is None:
        views = _CSR[base] = {}
    key = (A.storage_offset(), tuple(A.shape), A.stride())
    if key not in views:
        views[key] = _csr_copy(A)
    rows: list[sp.csr_matrix] | None = views[key]
    return rows


def _csr_copy(A: torch.Tensor) -> list[sp.csr_matrix] | None:
    """:func:`csr_rows` made now."""
    eligible = not A.is_sparse and not A.requires_grad and A.device.type == "cpu"
    if not eligible or A.dtype != torch.float64 or A.shape[1] < CSR_MIN_ROWS:
        return None
    array = A.numpy()
    if np.count_nonzero(array) > CSR_DENSITY * array.size:
        return None
    return [sp.csr_matrix(part) for part in array]


def _stacked(parts: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
    """Per-worker NumPy results as one tensor ``[w, ...]``."""
    return torch.from_numpy(np.stack(parts)).to(dtype)


def weighted_gram(A: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """``A[w]ᵀ diag(D[w]) A[w]`` for ``A[w, b, d]`` and ``D[w, b]``, ``[w, d, d]``.

    Through the CSR rows of a large, mostly zero design (:func:`csr_rows`), else dense.
    """
    rows = None if D.requires_grad else csr_rows(A)
    if rows is None:
        A = dense(A)
        return torch.einsum("wbi,wbj->wij", A * D[..., None], A)
    weights = D.detach().numpy()
    grams = [
        (m.T @ m.multiply(c[:, None]).tocsr()).toarray() for m, c in zip(rows, weights, strict=True)
    ]
    return _stacked(grams, D.dtype)
