"""In-memory data sets and the worker-stacked shards built from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Dataset:
    """Examples ``X[n, *feature_shape]`` (float) with integer labels ``y[n]`` in 0..n_classes-1."""

    name: str
    X: np.ndarray
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

    ``X[w, n_max, ...]``, ``y[w, n_max]``, ``weight[w, n_max]`` (1 for real examples, 0 for
    padding), ``sizes[w]`` and the global ids ``workers[w]`` of the workers held here.
    """

    X: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor
    sizes: torch.Tensor
    workers: torch.Tensor

    @staticmethod
    def build(data: Dataset, parts: list[np.ndarray], dtype: torch.dtype) -> Shards:
        """Stack the shards ``data[parts[w]]`` for every worker w."""
        sizes = np.array([p.size for p in parts], dtype=np.int64)
        width = int(sizes.max())
        X = np.zeros((len(parts), width, *data.feature_shape), dtype=np.float64)
        y = np.zeros((len(parts), width), dtype=np.int64)
        weight = np.zeros((len(parts), width))
        for w, part in enumerate(parts):
            X[w, : part.size] = data.X[part]
            y[w, : part.size] = data.y[part]
            weight[w, : part.size] = 1.0
        return Shards(
            torch.from_numpy(X).to(dtype),
            torch.from_numpy(y),
            torch.from_numpy(weight).to(dtype),
            torch.from_numpy(sizes),
            torch.arange(len(parts)),
        )

    @property
    def rows(self) -> int:
        """Number of workers held."""
        return int(self.sizes.shape[0])

    def take(self, index: torch.Tensor) -> Shards:
        """The shards at positions ``index``."""
        return Shards(
            self.X[index], self.y[index], self.weight[index], self.sizes[index], self.workers[index]
        )

    def span(self, start: int, stop: int) -> Shards:
        """The shards at positions ``start..stop-1`` as a view (no copy)."""
        rows = slice(start, stop)
        return Shards(
            self.X[rows], self.y[rows], self.weight[rows], self.sizes[rows], self.workers[rows]
        )

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples at per-worker positions ``index[w, b]``: ``X[w, b, ...]``, ``y[w, b]``.

        One ``index_select`` on the flattened shards (several times faster on CPU than
        advanced indexing with two index tensors).
        """
        rows, width = self.X.shape[:2]
        flat = (index + width * torch.arange(rows)[:, None]).reshape(-1)
        X = self.X.reshape(rows * width, *self.X.shape[2:]).index_select(0, flat)
        y = self.y.reshape(-1).index_select(0, flat)
        return X.reshape(*index.shape, *self.X.shape[2:]), y.reshape(index.shape)
