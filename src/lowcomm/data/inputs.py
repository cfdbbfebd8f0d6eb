"""A user's data given as Python objects: ``(X, y)`` arrays or tensors, or a torch ``Dataset``.

A SciPy sparse ``X`` stays sparse (CSR) when its dense form would not fit in
:data:`~lowcomm.data.sparse.DENSE_LIMIT`, as a wide LIBSVM file does (logistic and softmax
train on it); otherwise it is densified.

Arrays are copied once into float64 features and labels coded 0..C-1 (by rank among the
sorted distinct labels, as every loader does; the test labels with the training set's codes).
A ``torch.utils.data.Dataset`` is materialised once, item by item, as ``(x, y)`` pairs. Without
a test set, ``test_fraction`` of the examples is held out by the seeded split every data set
without a test split of its own gets, so the test metric is measured on unseen examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import Dataset as TorchDataset

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.dataset import Dataset, TrainTest
from lowcomm.data.loaders import encode_labels, split_train_test
from lowcomm.data.sparse import Features, fits_dense

Examples: TypeAlias = tuple[Any, Any] | TorchDataset[Any]
"""``(X, y)`` with ``X[n, ...]`` and ``y[n]`` (NumPy arrays, tensors or lists), or a Dataset."""

_OWNER = "lowcomm.run"


def _array(value: Any) -> Any:
    """A NumPy copy of an array, a tensor or a nested sequence; SciPy sparse matrices as CSR."""
    if sp.issparse(value):
        return sp.csr_matrix(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _materialise(dataset: TorchDataset[Any], setting: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(x, y)`` item of a map-style dataset, stacked."""
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        allowed = "a map-style Dataset with a length (an IterableDataset has none)"
        raise InvalidConfigError(setting, _OWNER, allowed, dataset) from None
    items = [dataset[i] for i in range(size)]
    if not items or not all(isinstance(item, Sequence) and len(item) == 2 for item in items):
        raise InvalidConfigError(setting, _OWNER, "a Dataset of (x, y) items", dataset)
    X = np.stack([_array(x) for x, _ in items])
    y = np.array([_array(label).item() for _, label in items])
    return X, y


def _pair(value: Any, setting: str) -> tuple[Features, np.ndarray]:
    """``(X, y)`` of a pair or a Dataset, checked for shape and finite features."""
    X: Any
    if isinstance(value, TorchDataset):
        X, y = _materialise(value, setting)
    elif isinstance(value, tuple | list) and len(value) == 2:
        X, y = _array(value[0]), _array(value[1])
    else:
        allowed = "a pair (X, y) of arrays or tensors, a torch Dataset or a data-set name"
        raise InvalidConfigError(setting, _OWNER, allowed, type(value).__name__)
    if X.ndim < 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        allowed = "X[n, features...] and y[n] with the same n"
        raise InvalidConfigError(setting, _OWNER, allowed, f"X{X.shape}, y{y.shape}")
    try:
        X = X.astype(np.float64)
    except (TypeError, ValueError):
        raise InvalidConfigError(setting, _OWNER, "numeric features", X.dtype) from None
    if not np.isfinite(X.data if sp.issparse(X) else X).all():
        raise InvalidConfigError(setting, _OWNER, "finite features", "nan or inf in X")
    if sp.issparse(X) and fits_dense(X.shape):
        X = X.toarray()
    return X, y


@dataclass(frozen=True)
class Supplied:
    """A user's training set and optional test set, labels coded as the training set's."""

    train: Dataset
    test: Dataset | None

    def split(self, seed: int, test_fraction: float) -> TrainTest:
        """The training and test sets; without a test set, a seeded held-out split."""
        if self.test is None:
            return split_train_test(self.train, test_fraction, seed)
        return TrainTest(self.train, self.test)


def supplied(data: Examples, test: Examples | None) -> Supplied:
    """Materialise ``data`` and ``test`` once (see the module docstring)."""
    X, raw = _pair(data, "data")
    y, classes = encode_labels(raw, source="data")
    train = Dataset("arrays", X, y, int(classes.size))
    if test is None:
        return Supplied(train, None)
    X_test, raw_test = _pair(test, "test")
    if X_test.shape[1:] != X.shape[1:]:
        allowed = f"examples of the training shape {X.shape[1:]}"
        raise InvalidConfigError("test", _OWNER, allowed, X_test.shape[1:])
    y_test, _ = encode_labels(raw_test, classes, source="test")
    return Supplied(train, Dataset("arrays", X_test, y_test, train.n_classes))
