"""In-memory data sets and the worker-stacked shards built from them.

Features are dense, or sparse for wide LIBSVM data (:mod:`lowcomm.data.sparse`): a SciPy CSR
matrix in a :class:`Dataset`, a sparse COO tensor in :class:`Shards`, behind the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch

from lowcomm.core.device import as_device
from lowcomm.data import sparse
from lowcomm.data.sparse import Features


@dataclass(frozen=True)
class Dataset:
    """Examples ``X[n, *feature_shape]`` (float) with integer labels ``y[n]`` in 0..n_classes-1.

    ``X`` is a dense array, or a CSR matrix ``[n, d]`` for wide sparse data. Sequence targets
    (a language model's next tokens, :mod:`lowcomm.data.text`) are ``y[n, ...]``: one label
    per position of an example.
    """

    name: str
    X: Features
    y: np.ndarray
    n_classes: int

    @property
    def n(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.X.shape[1:])

    def subset(self, index: np.ndarray) -> Dataset:
        """The examples at ``index``."""
        return Dataset(self.name, self.X[index], self.y[index], self.n_classes)


@dataclass(frozen=True)
class TrainTest:
    """A training set and a test set with the same features and classes."""

    train: Dataset
    test: Dataset


@dataclass(frozen=True)
class Shards:
    """Worker shards stacked on a leading worker axis and padded to the largest shard.

    ``X[w, n_max, ...]``, ``y[w, n_max, ...]``, ``weight[w, n_max]`` (1 for real examples, 0 for
    padding), ``sizes[w]``, the global ids ``workers[w]`` of the workers held here and their
    ``share[w]`` of the training set (:func:`shares`). ``X`` is a coalesced sparse COO tensor
    ``[w, n_max, d]`` when the data set's features are CSR. All live on one device, where the
    workers compute.
    """

    X: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor
    sizes: torch.Tensor
    workers: torch.Tensor
    share: torch.Tensor

    @staticmethod
    def build(
        data: Dataset,
        parts: list[np.ndarray],
        dtype: torch.dtype,
        device: torch.device | str | None = None,
    ) -> Shards:
        """Stack the shards ``data[parts[w]]`` for every worker w on ``device``.

        ``device`` None is torch's default device.
        """
        device = as_device(device)
        sizes = np.array([p.size for p in parts], dtype=np.int64)
        width = int(sizes.max())
        y = np.zeros((len(parts), width, *data.y.shape[1:]), dtype=np.int64)
        weight = np.zeros((len(parts), width))
        for w, part in enumerate(parts):
            y[w, : part.size] = data.y[part]
            weight[w, : part.size] = 1.0
        counts = torch.from_numpy(sizes)
        return Shards(
            _stack_features(data, parts, width, dtype, device),
            torch.from_numpy(y).to(device),
            torch.from_numpy(weight).to(device, dtype),
            counts.to(device),
            torch.arange(len(parts), device=device),
            shares(counts).to(device, dtype),
        )

    @property
    def rows(self) -> int:
        """Number of workers held."""
        return int(self.sizes.shape[0])

    def take(self, index: torch.Tensor) -> Shards:
        """The shards at positions ``index``."""
        return self._select(index)

    def span(self, start: int, stop: int) -> Shards:
        """The shards at positions ``start..stop-1`` as a view (no copy; sparse ones are copied)."""
        return self._select(slice(start, stop))

    def _select(self, rows: slice | torch.Tensor) -> Shards:
        """The shards at ``rows``."""
        return Shards(
            self._features(rows),
            self.y[rows],
            self.weight[rows],
            self.sizes[rows],
            self.workers[rows],
            self.share[rows],
        )

    def _features(self, rows: slice | torch.Tensor) -> torch.Tensor:
        """``X`` of the workers at ``rows``: a dense selection, or a sparse gather of their rows."""
        if not self.X.is_sparse:
            return self.X[rows]
        width, device = self.X.shape[1], self.X.device
        workers = torch.arange(self.rows, device=device)[rows]
        return self._gather_rows(workers[:, None] * width + torch.arange(width, device=device))

    @cached_property
    def equal_shares(self) -> bool:
        """Whether every worker's share is exactly 1 (equal shards), computed once."""
        return bool((self.share == 1).all())

    @cached_property
    def _row_starts(self) -> torch.Tensor:
        """Row pointers of a sparse ``X`` (computed once per shards object)."""
        return sparse.row_starts(self.X)

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Flattened rows ``rows[w, b]`` of a sparse ``X`` as a sparse ``[w, b, d]`` tensor."""
        return sparse.gather_rows(self.X, self._row_starts, rows)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples at per-worker positions ``index[w, b]``: ``X[w, b, ...]``, ``y[w, b, ...]``.

        One ``index_select`` on the flattened shards (several times faster on CPU than
        advanced indexing with two index tensors); sparse shards give a sparse ``X[w, b, d]``.
        """
        rows, width = self.X.shape[:2]
        if rows == 1:  # one worker (an asynchronous computation): its positions are the rows
            flat = index.reshape(-1)
        else:
            flat = (index + width * torch.arange(rows, device=index.device)[:, None]).reshape(-1)
        targets = self.y.shape[2:]
        y = self.y.reshape(rows * width, *targets).index_select(0, flat)
        y = y.reshape(*index.shape, *targets)
        if self.X.is_sparse:
            return self._gather_rows(flat.reshape(index.shape)), y
        X = self.X.reshape(rows * width, *self.X.shape[2:]).index_select(0, flat)
        return X.reshape(*index.shape, *self.X.shape[2:]), y


def _stack_features(
    data: Dataset, parts: list[np.ndarray], width: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``X[w, width, ...]`` with ``data.X[parts[w]]`` first in row w and zeros after."""
    if sp.issparse(data.X):
        return sparse.stack(data.X, parts, width, dtype, device)
    X = np.zeros((len(parts), width, *data.feature_shape), dtype=np.float64)
    for w, part in enumerate(parts):
        X[w, : part.size] = data.X[part]
    return torch.from_numpy(X).to(device, dtype)


def shares(sizes: torch.Tensor) -> torch.Tensor:
    """Each worker's share of the training set against an equal split: M n_m / N, float64 [M].

    ``sizes[m]`` = n_m are the shard sizes of all M workers and N their sum. The weighted sum
    sum_m share_m f_m of the workers' mean objectives is M times the global mean objective
    (1/N) sum_i loss_i + (l2/2)||x||^2. On equal shards (n_m M = N in integers) every share is
    exactly 1.0: both integer products are exact in float64, and so is their equal ratio.
    """
    return (sizes * sizes.shape[0]).to(torch.float64) / float(sizes.sum())
