"""The examples a run keeps: the training set cut, up front, to what the algorithm can use.

An algorithm that can use only part of each shard says how many examples per worker through
``usable(sizes) -> int | None`` (``sgd`` with an ``order``: one epoch's n, the smallest shard cut
to a multiple of 2b; :mod:`lowcomm.ordering.orders`). Every worker then keeps n examples of its
shard, drawn by the run's seed (:func:`keep_per_worker`), and the others are removed from the
training set before anything is built: the algorithm, whatever its order, trains on the kept
set and ``train_loss`` is measured on it. The removal is recorded in ``run.json``
(``data.removed``) and announced on stderr by :func:`lowcomm.run` and ``lowcomm run``.
Algorithms without ``usable`` (or returning None) keep every example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lowcomm.algorithms.base import Algorithm
from lowcomm.core.device import HOST
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import TrainTest


@dataclass(frozen=True)
class Removed:
    """Training examples removed before the run: ids in the loaded training set, and why."""

    ids: np.ndarray
    why: str

    def record(self) -> dict[str, Any]:
        """What ``run.json`` says under ``data.removed``."""
        return {"count": int(self.ids.size), "ids": self.ids.tolist(), "why": self.why}


NOTHING_REMOVED = Removed(np.zeros(0, dtype=np.int64), "")


def keep_per_worker(parts: list[np.ndarray], n: int, seed: int) -> list[np.ndarray]:
    """The ``n`` examples each worker keeps of its shard ``parts[w]`` (all if it holds <= n).

    Which ones is a uniform draw that depends only on the seed, the worker and its shard: the
    first ``n`` of a permutation from the stream ``kept`` keyed by the worker. The kept
    examples stay in their order in the shard, so a shard of exactly ``n`` is unchanged.
    """
    streams = Streams(seed)
    return [
        part[np.sort(streams.numpy("kept", w).permutation(part.size)[:n])]
        for w, part in enumerate(parts)
    ]


def cut_to_usable(
    data: TrainTest, parts: list[np.ndarray], algorithm: Algorithm, seed: int
) -> tuple[TrainTest, list[np.ndarray], Removed]:
    """The training set and shards cut to the examples ``algorithm`` can use, and what went.

    Returns the data with the kept training examples only (in their loaded order), the shards
    as indices into it, and the removed examples (ids in the loaded training set).
    """
    usable = getattr(algorithm, "usable", None)
    sizes = [int(part.size) for part in parts]
    n = None if usable is None else usable(torch.tensor(sizes, device=HOST))
    if n is None or n >= max(sizes):
        return data, parts, NOTHING_REMOVED
    kept = keep_per_worker(parts, n, seed)
    ids = np.sort(np.concatenate(kept))
    removed = np.setdiff1d(np.arange(data.train.n), ids)
    why = (
        f"{algorithm.name} uses n = {n} examples per worker and epoch (shards of "
        f"{min(sizes)}-{max(sizes)}); each worker keeps n of its shard, drawn by the seed"
    )
    shards = [np.searchsorted(ids, part) for part in kept]
    return TrainTest(data.train.subset(ids), data.test), shards, Removed(removed, why)


def note(removed: Removed, n_train: int) -> str:
    """The one line announcing a removal (``n_train``: the kept training examples)."""
    count = int(removed.ids.size)
    return (
        f"note: removed {count} of {count + n_train} training examples before the run: "
        f"{removed.why} (run.json: data.removed)"
    )
