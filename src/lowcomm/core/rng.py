"""Counter-based random streams keyed by (seed, stream name, worker, round).

Every random draw in lowcomm is a pure function of its key, so a worker's draws do not depend on
which process hosts it or on how many other workers are computed alongside it: the in-process and
the multi-process engines see the same numbers, and no global RNG state is ever touched. The
generator is SplitMix64 (Steele, Lea and Flood, 2014) applied to a counter, vectorised over the
worker axis with NumPy's wrapping uint64 arithmetic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TWO_POW_53 = float(2**53)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective avalanche of 64-bit words."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


Round = int | torch.Tensor


def _keys(seed: int, stream: str, workers: np.ndarray, round_: Round, step: int) -> np.ndarray:
    """One 64-bit key per worker for this (seed, stream, round, step).

    ``round_`` is one round for all workers or a tensor of one round per worker.
    """
    tag = np.uint64(zlib.crc32(stream.encode()))
    rounds = np.asarray(round_, dtype=np.int64).astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        base = _mix(np.array([np.uint64(seed) ^ (tag << np.uint64(32))], dtype=np.uint64))
        base = _mix(base + rounds * _GOLDEN)
        base = _mix(base + np.uint64(step + 1) * _MUL1)
        return _mix(base + (workers.astype(np.uint64) + np.uint64(1)) * _GOLDEN)


@dataclass(frozen=True)
class Streams:
    """Random streams of one run; ``seed`` is the run's root seed."""

    seed: int

    def uniform(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, step: int = 0
    ) -> torch.Tensor:
        """Uniform draws in [0, 1), float64, shape [len(workers), n]."""
        keys = _keys(self.seed, stream, workers.cpu().numpy(), round_, step)
        counters = np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
        with np.errstate(over="ignore"):
            bits = _mix(keys[:, None] + counters[None, :])
        return torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) / _TWO_POW_53)

    def integers(
        self,
        stream: str,
        workers: torch.Tensor,
        round_: Round,
        n: int,
        high: torch.Tensor,
        step: int = 0,
    ) -> torch.Tensor:
        """Integers uniform in [0, high[w]) per worker, int64, shape [len(workers), n]."""
        u = self.uniform(stream, workers, round_, n, step)
        return (u * high.to(torch.float64)[:, None]).floor().to(torch.int64)

    def permutations(
        self,
        stream: str,
        workers: torch.Tensor,
        round_: Round,
        sizes: torch.Tensor,
        width: int,
        step: int = 0,
    ) -> torch.Tensor:
        """A uniform permutation of range(sizes[w]) per worker, padded to ``width`` columns.

        Columns past a worker's size hold its padding positions (sizes[w], ..., width - 1).
        """
        keys = self.uniform(stream, workers, round_, width, step)
        position = torch.arange(width)
        pad = position[None, :] >= sizes[:, None]
        keys = torch.where(pad, 1.0 + position.to(keys.dtype), keys)
        return torch.argsort(keys, dim=1, stable=True)

    def normal(
        self, stream: str, workers: torch.Tensor, round_: Round, n: int, step: int = 0
    ) -> torch.Tensor:
        """Standard normal draws (Box-Muller), float64, shape [len(workers), n]."""
        u = self.uniform(stream, workers, round_, 2 * n, step)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[:, :n]))
        return radius * torch.cos(2.0 * torch.pi * u[:, n:])

    def generator(self, stream: str, worker: int = -1, round_: int = 0) -> torch.Generator:
        """A torch generator seeded from the key, for one-off draws (initialisation, synthesis)."""
        key = _keys(self.seed, stream, np.array([worker + 1]), round_, 0)[0]
        return torch.Generator().manual_seed(int(key >> np.uint64(1)))

    def numpy(self, stream: str, worker: int = -1, round_: int = 0) -> np.random.Generator:
        """A NumPy generator seeded from the key, for one-off draws (partitions, synthesis)."""
        key = _keys(self.seed, stream, np.array([worker + 1]), round_, 0)[0]
        return np.random.default_rng(int(key))
