"""Data for streaming PCA: X ~ N(0, Sigma) with a chosen eigengap and e_1 on top.

Sigma = diag(1, 1 - gap, 0.4 (1 - gap) / 0.6, ...): for gap 0.4 this is the spec's pilot
diag(1, 0.6, 0.4, ..., 0.4) (../shared/papers/hogwild-increasing-batch-and-async-msgd.md, B.6).
"""

from __future__ import annotations

import numpy as np

from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, TrainTest


def pca_spectrum(d: int, gap: float) -> np.ndarray:
    """Eigenvalues 1, 1 - gap, then 0.4 (1 - gap) / 0.6 for the rest."""
    tail = 0.4 * (1 - gap) / 0.6
    return np.array([1.0, 1.0 - gap, *([tail] * (d - 2))])[:d]


def pca_data(n: int, d: int, gap: float = 0.4, seed: int = 0) -> TrainTest:
    """Samples X ~ N(0, diag(spectrum)): n to stream from, and as many to evaluate on."""
    if not 0 < gap < 1 or d < 2:
        raise InvalidConfigError("data", "synthetic-pca", "D >= 2 and a gap in (0, 1)", (d, gap))
    scale = np.sqrt(pca_spectrum(d, gap))
    draw = Streams(seed).numpy("pca-samples").standard_normal((2 * n, d)) * scale
    labels = np.zeros(2 * n, dtype=np.int64)
    data = Dataset("synthetic-pca", draw, labels, 1)
    return TrainTest(data.subset(np.arange(n)), data.subset(np.arange(n, 2 * n)))
