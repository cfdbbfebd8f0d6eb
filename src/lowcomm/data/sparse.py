"""Sparse features: wide data sets held as torch sparse COO tensors, selected row by row.

A LIBSVM file with millions of features cannot be stacked densely (``[workers, rows, features]``
in float64 would take hundreds of GB), so such data stay a SciPy CSR matrix in a
:class:`~lowcomm.data.dataset.Dataset` and become a coalesced sparse COO tensor (non-zeros
sorted by worker, row, column) in the shards and the evaluator. A coalesced tensor keeps each
row's non-zeros together, so row pointers (as in CSR) select rows in O(their non-zeros): a
mini-batch costs what its examples hold, not what the shard holds. Only the linear problems
read sparse features (:mod:`lowcomm.problems.linear`); data whose dense form is small are
dense, which every model reads (:data:`DENSE_LIMIT`).
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
import torch

DENSE_LIMIT = 256 * 2**20
"""Largest dense feature matrix, in bytes of float64, that a sparse file is densified into."""

Features: TypeAlias = np.ndarray | sp.csr_matrix
"""A data set's features: a dense array, or a CSR matrix of one-dimensional examples."""


def fits_dense(shape: tuple[int, int], limit: int = DENSE_LIMIT) -> bool:
    """Whether a float64 matrix of ``shape`` takes at most ``limit`` bytes."""
    return shape[0] * shape[1] * 8 <= limit


def to_tensor(X: Features, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Features as a tensor in ``dtype`` on ``device``: dense as they are, CSR as 2-D sparse COO."""
    if isinstance(X, np.ndarray):
        return torch.as_tensor(X, dtype=dtype, device=device)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    return _coalesced(np.stack([rows, X.indices]), X.data, X.shape, dtype, device)


def stack(
    X: sp.csr_matrix,
    parts: list[np.ndarray],
    width: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """The rows ``X[parts[w]]`` of every worker w as a sparse ``[len(parts), width, d]`` tensor.

    Row ``i`` of worker ``w`` is example ``parts[w][i]``; rows past a shard's size are empty.
    """
    chosen = X[np.concatenate(parts)]
    per_row = np.diff(chosen.indptr)
    worker = np.repeat(np.arange(len(parts)), [p.size for p in parts])
    position = np.concatenate([np.arange(p.size) for p in parts])
    indices = np.stack([np.repeat(worker, per_row), np.repeat(position, per_row), chosen.indices])
    shape = (len(parts), width, X.shape[1])
    return _coalesced(indices, chosen.data, shape, dtype, device)


def _coalesced(
    indices: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """A checked, coalesced sparse COO tensor on ``device`` (duplicate entries summed)."""
    index = torch.from_numpy(indices.astype(np.int64)).to(device)
    value = torch.from_numpy(values).to(device, dtype)
    return torch.sparse_coo_tensor(index, value, shape, check_invariants=True).coalesce()


def row_starts(X: torch.Tensor) -> torch.Tensor:
    """Row pointers of a coalesced sparse ``X[w, n, d]``: where each of its ``w * n`` rows begins.

    ``[w * n + 1]``; the non-zeros of flattened row ``r`` are ``starts[r]:starts[r + 1]``.
    """
    workers, width = X.shape[:2]
    index = X._indices()
    counts = torch.bincount(index[0] * width + index[1], minlength=workers * width)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def gather_rows(X: torch.Tensor, starts: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows ``rows[w, b]`` of a coalesced sparse ``X`` as a sparse ``[w, b, d]`` tensor.

    ``rows`` holds positions among the flattened rows of ``X`` and ``starts`` is
    :func:`row_starts` of ``X``. The result is coalesced (rows in order, columns sorted).
    """
    flat = rows.reshape(-1)
    first, counts = starts[flat], starts[flat + 1] - starts[flat]
    total = int(counts.sum())
    device = rows.device
    examples = torch.arange(flat.numel(), device=device)
    row = torch.repeat_interleave(examples, counts, output_size=total)
    shift = first - (counts.cumsum(0) - counts)
    offsets = torch.repeat_interleave(shift, counts, output_size=total)
    source = offsets + torch.arange(total, device=device)
    batch = rows.shape[1]
    columns = X._indices()[2].index_select(0, source)
    indices = torch.stack([row // batch, row % batch, columns])
    values = X._values().index_select(0, source)
    shape = (*rows.shape, X.shape[2])
    return torch.sparse_coo_tensor(
        indices, values, shape, is_coalesced=True, check_invariants=False
    )
